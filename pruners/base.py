"""The shared base of every pruner: exact-k selection, schedules, and the method interface.

A method turns a freshly initialised masked model into a trained sparse model.
Score-based prune-at-init methods (random, magnitude, SynFlow) only implement
:meth:`Method.scores` (and maybe a schedule): the base owns the loop that turns scores into
exact-k masks (:func:`prune_on_schedule`) and :meth:`Method.run`, which prunes and then
trains with the shared engine.  Methods that train themselves (Gem-Miner, DEEPR, DNW, IMP)
override :meth:`Method.run`.  Every method leaves plain :class:`models.masks.Mask` masks
behind, so the runs store and the analyses read all of them alike.

A method's options are a dataclass (``Method.Options``) built from the config's
``methods.<name>`` section; its display style (label, tag, colour, marker) is
``Method.style`` (see :func:`method_style`).

Densities are fractions in (0, 1].
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

import pandas as pd
import torch
from torch import Tensor, nn

from models.masks import get_masks, prunable_layers, set_masks
from utils.errors import UserError, check_density


def kept_count(density: float, total: int) -> int:
    """Exact number of weights kept at ``density``: round(d·N)."""
    return int(round(density * total))


def count_true(mask: Tensor, dim: int | None = None) -> Tensor:
    """Number of True entries of a bool tensor, in all (``dim=None``) or along ``dim``, as int32.

    Sums the bytes as int32: ``sum`` accumulates in int64 and ``count_nonzero`` compares first,
    both ≈2× slower on the per-step masks of DNW and DEEPR.  Example:
    ``count_true(torch.tensor([[True, False], [True, True]]), dim=1).tolist() == [1, 2]``."""
    data = mask.view(torch.uint8) if mask.is_contiguous() else mask.to(torch.uint8)
    return data.sum(dtype=torch.int32) if dim is None else data.sum(dim, dtype=torch.int32)


def select_global(scores: dict[str, Tensor], n_keep: int, allowed: dict[str, Tensor] | None = None,
                  generator: torch.Generator | None = None, scope: str = "global") -> dict[str, Tensor]:
    """Keep exactly the ``n_keep`` highest scores, only among ``allowed`` entries.

    Args:
        scores: ``{layer: score tensor}``, any shapes.
        n_keep: total count to keep (``scope="global"``); with ``scope="layer"`` each layer
            keeps round(n_keep / N · N_layer).  Capped at the number of allowed entries,
            so pruned weights are never revived.
        allowed: ``{layer: bool tensor}``; default everything.
        generator: breaks ties by a seeded random key, never by index (index order would
            create positional structure that the analyses would "discover").
        scope: ``"global"`` or ``"layer"``.

    Returns:
        ``{layer: bool mask}`` with exactly min(n_keep, #allowed) True entries (global).
    """
    if scope == "layer":
        total = sum(s.numel() for s in scores.values())
        return {name: select_global({name: s}, kept_count(n_keep / total, s.numel()),
                                    None if allowed is None else {name: allowed[name]}, generator)[name]
                for name, s in scores.items()}
    if scope != "global":
        raise UserError(f"unknown scope {scope!r}; choose 'global' or 'layer'")
    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).to(torch.float64).cpu() for n in names])
    ok = (torch.cat([allowed[n].reshape(-1).cpu() for n in names]) if allowed is not None
          else torch.ones_like(flat, dtype=torch.bool))
    n_keep = min(n_keep, int(ok.sum()))
    flat = torch.where(ok, flat, torch.tensor(-math.inf, dtype=torch.float64))
    flat = torch.nan_to_num(flat, nan=-math.inf)
    perm = torch.randperm(flat.numel(), generator=generator)
    keep = _top_k_ties_by_perm(flat, n_keep, perm)
    # Disallowed entries may tie at -inf with allowed ones only if n_keep exceeds #allowed, which the cap prevents.
    out, start = {}, 0
    for n in names:
        k = scores[n].numel()
        out[n] = keep[start:start + k].view(scores[n].shape).to(scores[n].device)
        start += k
    return out


def _top_k_ties_by_perm(flat: Tensor, k: int, perm: Tensor) -> Tensor:
    """Bool mask of the ``k`` largest entries of 1-D ``flat``; ties at the k-th value go to the
    entries that come first in ``perm`` (a permutation of the indices).

    The same set as the first ``k`` of a stable descending argsort of ``flat[perm]``
    (tests/test_pruners_base.py compares both), found with one selection (``kthvalue``) and a
    pass over the tied entries instead of a full sort: the sort dominated SynFlow's 1,000
    scorings on ResNet-20's 270,896 weights.
    """
    if k <= 0:
        return torch.zeros(flat.numel(), dtype=torch.bool)
    kth = torch.kthvalue(flat, flat.numel() - k + 1).values  # the k-th largest value
    keep = flat > kth
    need = k - int(keep.sum())
    tied = perm[(flat == kth)[perm]]  # the tied entries in perm order
    keep[tied[:need]] = True
    return keep


def layer_sizes(model: nn.Module) -> dict[str, int]:
    """Number of weights of every prunable layer, ``{layer: N_l}``."""
    return {name: m.weight.numel() for name, m in prunable_layers(model).items()}


def prune_to(model: nn.Module, scores: dict[str, Tensor], density: float, generator: torch.Generator,
             scope: str = "global") -> None:
    """Install the exact-k mask of ``scores`` at ``density``, never reviving pruned weights
    (one step of :func:`prune_on_schedule`)."""
    prune_on_schedule(model, lambda _: scores, [density], generator, scope)


def prune_on_schedule(model: nn.Module, scores: Callable[[nn.Module], dict[str, Tensor]],
                      schedule: list[float], generator: torch.Generator | None,
                      scope: str = "global") -> list[dict]:
    """Prune ``model`` in place along ``schedule``: at each density, the exact-k mask of
    ``scores(model)`` (:func:`select_global`) inside the current mask, so nothing is revived.

    Args:
        model: masked model; the masks of each step are the allowed set of the next, and
            pruned raw weights are zeroed (``set_masks``) before the next scoring.
        scores: ``model -> {layer: scores shaped like its weight}``, called once per step.
        schedule: densities (fractions) of the steps, e.g. :func:`exponential_schedule`.
        generator: tie-break stream; ``scores`` may draw from it too (before each step's ties).
        scope: ``"global"`` or ``"layer"`` (each layer keeps round(d·N_l)).

    Returns:
        one row per step: ``target`` (the scheduled density), ``density`` (kept after the
        step) and ``layers`` (per-layer densities after it).

    Example::

        >>> from models import fc
        >>> from pruners.magnitude import magnitude_scores
        >>> log = prune_on_schedule(fc(), magnitude_scores, [0.5, 0.2], torch.Generator().manual_seed(0))
        >>> [row["density"] for row in log]
        [0.5, 0.2]
    """
    total = sum(layer_sizes(model).values())
    log = []
    for target in schedule:
        masks = select_global(scores(model), kept_count(target, total), get_masks(model), generator, scope)
        set_masks(model, masks)
        kept = {n: int(m.sum()) for n, m in masks.items()}
        log.append({"target": target, "density": sum(kept.values()) / total,
                    "layers": {n: kept[n] / masks[n].numel() for n in masks}})
    return log


def exponential_schedule(density: float, levels: int, iterations: int = 1) -> list[float]:
    """SynFlow schedule (SPEC §8.1): D_l = d^(l/L) for l = 1..L, and D_l^(k/n) for k = 1..n within level l."""
    out = []
    for level in range(1, levels + 1):
        d_level = density ** (level / levels)
        out.extend(d_level ** (k / iterations) for k in range(1, iterations + 1))
    return out


def linear_schedule(density: float, steps: int) -> list[float]:
    """Densities falling linearly from 1 to ``density`` in ``steps`` steps."""
    return [1 - (1 - density) * k / steps for k in range(1, steps + 1)]


@dataclass
class MethodResult:
    """What a method hands to the runs store for one stored run.

    Attributes:
        model: the trained model, with plain masks.
        init_model: the model as training started (init weights and initial masks).
        history: per-epoch history (see :func:`utils.engine.train.train`).
        extras: extra tensors to store, e.g. Gem-Miner flags and scores, DEEPR signs.
        support: per layer, the positions whose weights are stored (⊇ mask); default the mask.
        info: extra JSON-serialisable facts for ``run.json`` (e.g. which Gem-Miner mode).
    """
    model: nn.Module
    init_model: nn.Module
    history: pd.DataFrame
    extras: dict[str, Tensor] = field(default_factory=dict)
    support: dict[str, Tensor] | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodStyle:
    """How figures and tables show a method (or a stored variant such as ``gem-miner-reinit``).

    Attributes:
        label: display name in legends and titles, e.g. ``"Gem-Miner"``.
        tag: short name in run tags and matrix labels, e.g. ``"gem"`` (``gem_21``).
        color: hex colour, one per method.
        marker: matplotlib marker, or None where figures use their own default.
    """
    label: str
    tag: str
    color: str
    marker: str | None = None


@dataclass
class NoOptions:
    """The options of a method that has none."""


class Method:
    """Base class of a pruning method, registered by ``name``.

    A subclass declares its options as a dataclass ``Options`` (the config's
    ``methods.<name>`` section; ``__post_init__`` validates them), its display ``style``, and
    either implements :meth:`scores` (score-based pruning at init, on the shared loop of
    :meth:`prune`), overrides :meth:`prune` (other prune-at-init rules) or overrides :meth:`run`
    (methods that train).  ``method.options`` holds the options; each one also reads as an
    attribute (``method.scope``).

    Example::

        >>> method = get_method("synflow", levels=10, iterations=100)
        >>> method.options
        SynFlowOptions(levels=10, iterations=100, scope='global')
        >>> method.prune(model, 0.05, seed=21, data_shape=(3, 32, 32))
    """
    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    style: ClassVar[MethodStyle]
    #: stored run names this method also produces (Gem-Miner's sanity checks), with their styles
    variants: ClassVar[dict[str, MethodStyle]] = {}
    #: keyword arguments for the model constructor (e.g. Gem-Miner's bias-free FC)
    model_kwargs: ClassVar[dict[str, dict]] = {}

    def __init__(self, **options):
        known = [f.name for f in fields(self.Options)]
        unknown = [k for k in options if k not in known]
        if unknown:
            raise UserError(f"bad options for method {self.name!r}: unknown option {unknown[0]!r}; "
                            f"choose from {', '.join(known) or 'none'}")
        self.options = self.Options(**options)
        #: per-step log of the last :meth:`prune` (score-based methods)
        self.log: list[dict] = []

    def __getattr__(self, name: str):
        # Only reached when ordinary lookup fails: the options read as attributes.
        options = self.__dict__.get("options")
        if options is not None and name in {f.name for f in fields(options)}:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in asdict(self.options).items())})"

    # ---- score-based pruning at init: the method scores, the base prunes ---------------------

    def scores(self, model: nn.Module, *, seed: int | None, data_shape: tuple[int, ...],
               generator: torch.Generator | None) -> dict[str, Tensor]:
        """Scores of the prunable weights, ``{layer: tensor shaped like its weight}``; the highest are kept.

        Args:
            model: the model being pruned (:meth:`scoring_model`), masked as after the last step.
            seed: the run seed.
            data_shape: one input's shape without the batch dimension, e.g. (1, 28, 28).
            generator: the prune stream, shared with the tie-breaks of :func:`select_global`.
        """
        raise NotImplementedError(f"{type(self).__name__} neither scores weights nor overrides prune()")

    def density_schedule(self, density: float) -> list[float]:
        """Densities of the scoring steps, ending at ``density``: one shot unless overridden."""
        return [density]

    def scoring_model(self, model: nn.Module) -> nn.Module:
        """The model scored and pruned step by step; ``model`` itself unless overridden (SynFlow
        scores a float64 copy, whose masks :meth:`prune_with` installs on ``model`` at the end)."""
        return model

    def prune(self, model: nn.Module, density: float, *, seed: int,
              data_shape: tuple[int, ...]) -> None:
        """Set the masks of ``model`` in place to keep ``density`` of its prunable weights.

        Score-based methods: the exact-k masks of :meth:`scores` along :meth:`density_schedule`,
        ties broken by the run's prune stream; the per-step log is kept in ``self.log``.
        """
        from utils.engine.seeding import generator
        self.log = self.prune_with(model, density, seed=seed, data_shape=data_shape,
                                   generator=generator(seed, "prune"))

    def prune_with(self, model: nn.Module, density: float, *, seed: int | None, data_shape: tuple[int, ...],
                   generator: torch.Generator | None) -> list[dict]:
        """:meth:`prune` with an explicit prune stream; returns the log of :func:`prune_on_schedule`."""
        schedule = self.density_schedule(check_density(density))
        work = self.scoring_model(model)
        log = prune_on_schedule(
            work, lambda m: self.scores(m, seed=seed, data_shape=tuple(data_shape), generator=generator),
            schedule, generator, self.options.scope)
        if work is not model:
            set_masks(model, get_masks(work))
        return log

    # ---- training -------------------------------------------------------------------------

    def check_train(self, train_cfg) -> None:
        """Raise :class:`UserError` if this method cannot train with ``train_cfg`` (checked for
        every run before a sweep starts, so a bad profile fails in seconds, not hours in)."""

    def epochs(self, train_cfg, seed: int) -> int:
        """Passes over the training data one run of this method makes, every phase counted
        (``sweep --dry-run`` estimates from it the time of a run whose kind has no stored run yet):
        the training config's epochs; a method with more phases adds theirs."""
        return train_cfg.epochs

    def run(self, model: nn.Module, data, density: float, train_cfg, *, seed: int,
            progress: bool = True) -> dict[str, MethodResult]:
        """Prune, then train with the shared engine. Returns ``{stored method name: result}``."""
        from utils.engine.train import train
        self.prune(model, density, seed=seed, data_shape=tuple(data.info.shape))
        init_model = copy.deepcopy(model)
        history = train(model, data, train_cfg, seed=seed, progress=progress, desc=self.name)
        return {self.name: MethodResult(model, init_model, history, info=self.run_info())}

    def run_info(self) -> dict:
        """Facts of the last :meth:`prune` for ``run.json`` (e.g. SynFlow's per-level log)."""
        return {}

    # ---- batched training (utils.engine.batched: K FC runs in one loop) ------------------------
    def batch_kind(self) -> str | None:
        """Which runs :func:`utils.engine.batched.train_batched` may train together with this one:
        ``"fixed-mask"`` when :meth:`run` is the base class's (prune, then plain training on the
        fixed mask), another name for a method with its own batched training, None for a method
        whose runs train alone."""
        return "fixed-mask" if type(self).run is Method.run else None

    # A method whose batched run is more than one train_batched call (Gem-Miner: stacked mining,
    # then the finetunes) defines ``run_batched(models, data, densities, train_cfg, *, seeds,
    # progress)`` returning one ``{stored name: result}`` per run; ``execute_batch`` calls it then.

    def start_batched(self, model: nn.Module, density: float, *, seed: int, data_shape: tuple[int, ...],
                      train_cfg=None) -> tuple[nn.Module, dict]:
        """Prepare ``model`` for batched training as :meth:`run` would before training with
        ``train_cfg``. Returns (the init model to store, this run's entry: its
        ``train_batched`` arguments ``topk``, ``rewire``, ``columns``, and anything
        :meth:`finish_batched` needs)."""
        self.prune(model, density, seed=seed, data_shape=data_shape)
        return copy.deepcopy(model), {}

    def finish_batched(self, model: nn.Module, init_model: nn.Module, history: pd.DataFrame,
                       entry: dict | None = None) -> dict[str, MethodResult]:
        """What :meth:`run` returns, from the batched training's model and history (``entry``:
        what :meth:`start_batched` returned for this run)."""
        return {self.name: MethodResult(model, init_model, history, info=self.run_info())}


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to :data:`METHODS` under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


def get_method(name: str, **options) -> Method:
    """Instantiate a registered method with its options; unknown names/options are a UserError."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)


def method_styles() -> dict[str, MethodStyle]:
    """The style of every registered method and of its stored variants, by run name."""
    out = {}
    for cls in METHODS.values():
        out[cls.name] = cls.style
        out.update(cls.variants)
    return out


def method_style(name: str) -> MethodStyle:
    """Display style of a method or stored variant by its run name, e.g. ``method_style("synflow")``
    or ``method_style("gem-miner-shuffle")``."""
    styles = method_styles()
    if name not in styles:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(sorted(styles))}")
    return styles[name]
