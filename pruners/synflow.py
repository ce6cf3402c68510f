"""SynFlow: iterative synaptic-flow pruning at init, without data (SPEC §8.1).

Tanaka et al. 2020, ``ganguli-lab/Synaptic-Flow`` (``prune.py``, ``Pruners/pruners.py``).
Every scoring works on ``deepcopy(model).double().eval()`` with all parameters and
floating buffers made non-negative (``abs_``); the flow is R = Σ copy(ones(1, *shape)),
and the score of each prunable weight is |θ ⊙ ∂R/∂θ| through the current mask (pruned
weights score 0).  :class:`SynFlow` only scores: the base's shared loop
(:func:`pruners.base.prune_on_schedule`) keeps the exact-k mask inside the current mask (no
revival, seeded tie-breaks), on the schedule D_l = d^(l/L), D = D_l^(k/n)
(:func:`exponential_schedule`).

The live model is never cast, abs'ed or run: its masks are installed once at the
end (pruned raw weights are zeroed as by every pruner, see ``set_masks``).
All L·n scorings reuse one float64 copy, which is exactly equivalent to re-copying
the live model each time (no training happens between scorings).

Densities are fractions in (0, 1].
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.masks import prunable_layers, raw_weight
from utils.errors import UserError

from .base import Method, MethodStyle, exponential_schedule, register


def linearize(model: nn.Module) -> nn.Module:
    """The float64 eval-mode copy used for scoring, with every parameter and floating buffer abs'ed."""
    work = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in work.parameters():
            p.abs_()
        for b in work.buffers():
            if b.is_floating_point():
                b.abs_()
    for p in work.parameters():
        p.requires_grad_(False)
    for m in prunable_layers(work).values():
        raw_weight(m).requires_grad_(True)
    return work


def _flow_and_scores(work: nn.Module, data_shape: tuple[int, ...]) -> tuple[float, dict[str, Tensor]]:
    """R and |θ ⊙ ∂R/∂θ| for a linearised copy (see :func:`linearize`)."""
    layers = prunable_layers(work)
    weights = [raw_weight(m) for m in layers.values()]
    device = weights[0].device
    ones = torch.ones((1, *data_shape), dtype=torch.float64, device=device)
    flow = work(ones).sum()
    grads = torch.autograd.grad(flow, weights, allow_unused=True)
    scores = {}
    for name, w, g in zip(layers, weights, grads):
        g = torch.zeros_like(w) if g is None else g
        scores[name] = (w.detach() * g).abs()
    return flow.item(), scores


def synflow_scores(model: nn.Module, data_shape: tuple[int, ...]) -> dict[str, Tensor]:
    """SynFlow scores ``{layer: float64 tensor shaped like the weight}`` of ``model`` (unchanged).

    Args:
        model: a masked model (any mode/dtype); it is deep-copied, never modified.
        data_shape: one input's shape without the batch dimension, e.g. (1, 28, 28).
    """
    return _flow_and_scores(linearize(model), tuple(data_shape))[1]


def synflow_flow(model: nn.Module, data_shape: tuple[int, ...]) -> float:
    """The synaptic flow R = Σ f(ones) of the linearised ``model`` (0 means no input-output path)."""
    work = linearize(model)
    with torch.no_grad():
        ones = torch.ones((1, *data_shape), dtype=torch.float64, device=raw_weight(
            next(iter(prunable_layers(work).values()))).device)
        return work(ones).sum().item()


def synflow_prune(model: nn.Module, density: float, *, data_shape: tuple[int, ...], levels: int = 10,
                  iterations: int = 1, generator: torch.Generator | None = None,
                  scope: str = "global") -> list[dict]:
    """Prune ``model`` in place to ``density`` with SynFlow; returns the per-step log.

    Args:
        model: masked model; pruning starts from its current mask and never revives.
        density: target fraction of prunable weights kept (exact count round(d·N)).
        data_shape: one input's shape, e.g. (1, 28, 28) or (3, 32, 32).
        levels, iterations: the schedule L × n (thesis FC 10×1, thesis ResNet 10×100,
            paper 1×100); L·n scorings in total.
        generator: tie-break stream (``utils.engine.seeding.generator(seed, "prune")``).
        scope: ``"global"`` (SynFlow) or ``"layer"`` (each layer keeps round(d·N_l)).

    Returns:
        one dict per scoring: ``step, level, iteration, target`` (the scheduled density),
        ``flow`` (R before that pruning step), ``density`` (after it) and ``layers``
        (per-layer densities after it, from the masks).

    Example::

        >>> from models import fc
        >>> from utils.engine.seeding import generator
        >>> log = synflow_prune(fc(), 0.05, data_shape=(1, 28, 28), generator=generator(21, "prune"))
        >>> len(log), log[-1]["density"]
        (10, 0.05)
    """
    method = SynFlow(levels=levels, iterations=iterations, scope=scope)
    return method.prune_with(model, density, seed=None, data_shape=data_shape, generator=generator)


@dataclass
class SynFlowOptions:
    """SynFlow's options: the schedule ``levels`` L × ``iterations`` n (thesis FC 10×1 — the
    default —, thesis ResNet-20 10×100, paper 1×100) and ``scope`` (``"global"`` or ``"layer"``)."""
    levels: int = 10
    iterations: int = 1
    scope: str = "global"

    def __post_init__(self):
        levels, iterations = int(self.levels), int(self.iterations)
        if levels < 1 or iterations < 1:
            raise UserError(f"SynFlow needs levels >= 1 and iterations >= 1, got {self.levels} x {self.iterations}")
        self.levels, self.iterations = levels, iterations


@register
class SynFlow(Method):
    """SynFlow at init (SPEC §8.1): ``levels`` × ``iterations`` data-free scorings, global exact-k.

    Only the scoring is SynFlow's: |θ ⊙ ∂R/∂θ| on the linearised float64 copy
    (:meth:`scoring_model`), along :func:`exponential_schedule`; the base prunes.  After
    :meth:`prune`, ``self.log`` holds the per-step log of :func:`synflow_prune`.
    """
    name = "synflow"
    Options = SynFlowOptions
    style = MethodStyle("SynFlow", "syn", "#D55E00", "o")

    def __init__(self, **options):
        super().__init__(**options)
        self._flows: list[float] = []

    def density_schedule(self, density: float) -> list[float]:
        return exponential_schedule(density, self.options.levels, self.options.iterations)

    def scoring_model(self, model: nn.Module) -> nn.Module:
        # One float64 copy for all L·n scorings: the same as re-copying the live model each time,
        # as nothing trains in between.
        return linearize(model)

    def scores(self, model, *, seed, data_shape, generator):
        flow, scores = _flow_and_scores(model, tuple(data_shape))
        self._flows.append(flow)  # R before this step, from the same pass, for the log
        return scores

    def prune_with(self, model, density, *, seed, data_shape, generator):
        self._flows = []
        steps = super().prune_with(model, density, seed=seed, data_shape=data_shape, generator=generator)
        n = self.options.iterations
        return [{"step": i + 1, "level": i // n + 1, "iteration": i % n + 1, "target": row["target"],
                 "flow": flow, "density": row["density"], "layers": row["layers"]}
                for i, (row, flow) in enumerate(zip(steps, self._flows))]

    def run_info(self) -> dict:
        # One summary row per level (the full log has L·n rows) for run.json.
        per_level = [row for row in self.log if row["iteration"] == self.options.iterations]
        return {"levels": self.options.levels, "iterations": self.options.iterations,
                "synflow_log": [{k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                                 for k, v in row.items()} for row in per_level]}
