"""The shared base of every pruner: exact-k selection, schedules, and the method interface.

A method turns a freshly initialised masked model into a trained sparse model.
Prune-at-init methods (random, magnitude, SynFlow) only implement :meth:`Method.prune`
and inherit :meth:`Method.run`, which prunes and then trains with the shared engine.
Methods that train themselves (Gem-Miner, DEEPR, DNW) override :meth:`Method.run`.
Every method leaves plain :class:`models.masks.Mask` masks behind, so the runs store
and the analyses read all of them alike.

Densities are fractions in (0, 1].
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd
import torch
from torch import Tensor, nn

from models.masks import get_masks, prunable_layers, set_masks
from utils.errors import UserError


def kept_count(density: float, total: int) -> int:
    """Exact number of weights kept at ``density``: round(d·N)."""
    return int(round(density * total))


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
    order = perm[torch.argsort(flat[perm], descending=True, stable=True)]
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:n_keep]] = True
    # Disallowed entries may tie at -inf with allowed ones only if n_keep exceeds #allowed, which the cap prevents.
    out, start = {}, 0
    for n in names:
        k = scores[n].numel()
        out[n] = keep[start:start + k].view(scores[n].shape).to(scores[n].device)
        start += k
    return out


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


def check_density(density: float) -> float:
    """Validate a density fraction in (0, 1]."""
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise UserError(f"density must be in (0, 1] as a fraction (the CLI takes percent in (0, 100]), got {density}")
    return float(density)


@dataclass
class MethodResult:
    """What a method hands to the runs store for one stored run.

    Attributes:
        model: the trained model, with plain masks.
        init_model: the model as training started (init weights and initial masks).
        history: per-epoch history (see :func:`utils.train.train`).
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


class Method:
    """Base class of a pruning method, registered by ``name``.

    Subclasses declare their options as keyword arguments of ``__init__`` (taken from
    the config's ``methods.<name>`` section) and either implement :meth:`prune`
    (prune-at-init) or override :meth:`run` (methods that train).
    """
    name: ClassVar[str]
    #: keyword arguments for the model constructor (e.g. Gem-Miner's bias-free FC)
    model_kwargs: ClassVar[dict[str, dict]] = {}

    def prune(self, model: nn.Module, density: float, *, seed: int,
              data_shape: tuple[int, ...]) -> None:
        """Set the masks of ``model`` in place to keep ``density`` of its prunable weights."""
        raise NotImplementedError

    def check_train(self, train_cfg) -> None:
        """Raise :class:`UserError` if this method cannot train with ``train_cfg`` (checked for
        every run before a sweep starts, so a bad profile fails in seconds, not hours in)."""

    def run(self, model: nn.Module, data, density: float, train_cfg, *, seed: int,
            progress: bool = True) -> dict[str, MethodResult]:
        """Prune, then train with the shared engine. Returns ``{stored method name: result}``."""
        from utils.train import train
        self.prune(model, density, seed=seed, data_shape=tuple(data.info.shape))
        init_model = copy.deepcopy(model)
        history = train(model, data, train_cfg, seed=seed, progress=progress, desc=self.name)
        return {self.name: MethodResult(model, init_model, history, info=self.run_info())}

    def run_info(self) -> dict:
        """Facts of the last :meth:`prune` for ``run.json`` (e.g. SynFlow's per-level log)."""
        return {}

    def trains_on_fixed_mask(self) -> bool:
        """Whether :meth:`run` is prune, then plain training on the fixed mask (the base class's),
        so runs of this method can be trained batched (:mod:`utils.batched`)."""
        return type(self).run is Method.run


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to :data:`METHODS` under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


def get_method(name: str, **options) -> Method:
    """Instantiate a registered method with its options; unknown names/options are a UserError."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    try:
        return METHODS[name](**options)
    except TypeError as exc:
        raise UserError(f"bad options for method {name!r}: {exc}") from None


def layer_sizes(model: nn.Module) -> dict[str, int]:
    return {name: m.weight.numel() for name, m in prunable_layers(model).items()}


def prune_to(model: nn.Module, scores: dict[str, Tensor], density: float, generator: torch.Generator,
             scope: str = "global") -> None:
    """Install the exact-k mask of ``scores`` at ``density``, never reviving pruned weights."""
    total = sum(layer_sizes(model).values())
    masks = select_global(scores, kept_count(density, total), get_masks(model), generator, scope)
    set_masks(model, masks)
