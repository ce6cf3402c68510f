"""Magnitude pruning: one-shot at init (``magnitude``) and iterative with rewinding (``imp``).

SPEC §8.2.  Both rank |w| of the raw weights globally over every prunable tensor and
keep an exact count with the shared :func:`select_global` (seeded tie-breaks, never
reviving a pruned weight).

* ``magnitude`` — the SynFlow paper's "Mag": global |w| at init, one shot.  It
  collapses layers at high compression (e.g. the FC's first layer, whose init bound
  1/√784 is below every hidden layer's 1/√100).
* ``imp`` — Frankle & Carbin / OpenLTH lottery-ticket IMP: train, remove 20% of the
  remaining weights by |w|, rewind the surviving weights to init (or to iteration k),
  repeat; the last round prunes exactly to the target.
* :func:`prune_by_magnitude` — prune an already trained net (deepstruct's
  ``prune_network_by_saliency``), by a percentage of the *remaining* weights or a count.

Densities are fractions in (0, 1].
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from models.masks import get_masks, prunable_layers, raw_weight, set_masks
from utils.errors import UserError

from .base import (
    Method,
    MethodResult,
    MethodStyle,
    check_density,
    kept_count,
    layer_sizes,
    prune_to,
    register,
    select_global,
)


def magnitude_scores(model: nn.Module) -> dict[str, Tensor]:
    """|w| of every prunable layer's raw weight (pruned entries are excluded by the mask, not by score)."""
    return {name: raw_weight(m).detach().abs() for name, m in prunable_layers(model).items()}


def prune_by_magnitude(model: nn.Module, percent: float | None = None, count: int | None = None,
                       generator: torch.Generator | None = None, scope: str = "global") -> int:
    """Remove the smallest-|w| weights among those still kept, in place.  Returns the number removed.

    Exactly one of:
        percent: percentage in [0, 100] of the **remaining** (currently kept) weights to remove,
            i.e. round(percent/100 · kept) weights.  This is deepstruct's
            ``prune_network_by_saliency(network, percentage)`` convention (class-blinded,
            "percentage of not yet pruned weights") and ``torch.nn.utils.prune``'s float
            ``amount``.  Repeated calls with 20 give densities 0.8, 0.64, 0.512, …
        count: absolute number of remaining weights to remove (capped at the number kept).

    ``scope="global"`` ranks all prunable layers together (class-blinded); ``"layer"``
    removes the same fraction from each layer.  Ties are broken by ``generator``.
    Pruned raw weights are set to 0 (see ``set_masks``).
    """
    if (percent is None) == (count is None):
        raise UserError("give exactly one of percent= (of the remaining weights) or count=")
    masks = get_masks(model)
    kept = sum(int(m.sum()) for m in masks.values())
    if percent is not None:
        if not 0 <= percent <= 100:
            raise UserError(f"percent must be in [0, 100] (of the remaining weights), got {percent}")
        remove = int(round(percent / 100 * kept))
    else:
        if count < 0:
            raise UserError(f"count must be >= 0, got {count}")
        remove = min(int(count), kept)
    scores = magnitude_scores(model)
    if scope == "layer":
        # Same fraction of each layer's remaining weights.
        frac = remove / kept if kept else 0.0
        new = {}
        for name, s in scores.items():
            k_l = int(masks[name].sum())
            new[name] = select_global({name: s}, k_l - int(round(frac * k_l)), {name: masks[name]},
                                      generator)[name]
    else:
        new = select_global(scores, kept - remove, masks, generator, scope)
    set_masks(model, new)
    return kept - sum(int(m.sum()) for m in new.values())


@dataclass
class MagnitudeOptions:
    """``scope``: ``"global"`` (class-blinded, the SynFlow paper's "Mag") or ``"layer"``."""
    scope: str = "global"


@register
class Magnitude(Method):
    """Global magnitude pruning at init (SynFlow paper's "Mag"): keep the round(d·N) largest |w|, one shot."""
    name = "magnitude"
    Options = MagnitudeOptions
    style = MethodStyle("Magnitude", "mag", "#CC79A7", "P")

    def scores(self, model, *, seed, data_shape, generator):
        return magnitude_scores(model)


def imp_schedule(density: float, rounds: int | None = None, rate: float = 0.2) -> list[float]:
    """Densities after each IMP pruning round, ending exactly at ``density``.

    ``rounds=None``: (1−rate)^r for r = 1, 2, … while above ``density``, then ``density``
    itself (so 0.8, 0.64, 0.512, 0.5 for d = 0.5; 18 rounds for d = 0.01995).
    ``rounds=n``: the geometric d^(r/n), r = 1..n (``rate`` is then ignored).
    """
    density = check_density(density)
    if rounds is not None:
        if int(rounds) < 1:
            raise UserError(f"IMP needs rounds >= 1, got {rounds}")
        return [density ** (r / int(rounds)) for r in range(1, int(rounds) + 1)]
    if not 0 < rate < 1:
        raise UserError(f"IMP rate must be in (0, 1), got {rate}")
    if density == 1:
        return []
    out, r = [], 1
    while (1 - rate) ** r > density * (1 + 1e-12):
        out.append((1 - rate) ** r)
        r += 1
    return out + [density]


@dataclass
class IMPOptions:
    """IMP's options: ``rounds`` and ``rate`` (see :func:`imp_schedule`), ``rewind_iteration``
    (0 = rewind to init) and ``scope`` of each magnitude prune."""
    rounds: int | None = None
    rate: float = 0.2
    rewind_iteration: int = 0
    scope: str = "global"

    def __post_init__(self):
        if self.rewind_iteration < 0:
            raise UserError(f"rewind_iteration must be >= 0, got {self.rewind_iteration}")
        self.rewind_iteration = int(self.rewind_iteration)


@register
class IMP(Method):
    """Iterative magnitude pruning with rewinding (lottery tickets; SPEC §6 / §8.2).

    Round 0 trains the dense net; each following round prunes globally by |w| to the next
    density of :func:`imp_schedule` (20% of the remaining weights, the last round exactly to
    the target), rewinds the kept weights — and every other parameter and buffer, incl. BN
    statistics — to their values at iteration ``rewind_iteration`` of round 0 (0 = init), and
    trains again with the full ``train_cfg`` (schedule restarted; OpenLTH instead resumes the
    schedule at iteration k).  Every round uses the same data order (``seed``).

    The history holds every round (``phase`` = ``imp_r<round>``, each with its row 0; epochs
    numbered on, round r starting at r·(epochs+1));
    ``init_model`` is the rewound model with the final mask, ``info["imp_densities"]`` the
    density after each round.  Cost: (rounds + 1) full trainings.
    """
    name = "imp"
    Options = IMPOptions
    # no stored IMP runs yet: a colour and marker no other method uses
    style = MethodStyle("IMP", "imp", "#DDCC77", "p")

    def scores(self, model, *, seed, data_shape, generator):
        return magnitude_scores(model)

    def run(self, model, data, density, train_cfg, *, seed, progress=True):
        from utils.engine.seeding import generator
        from utils.engine.train import Hooks, train
        o = self.options
        schedule = imp_schedule(density, o.rounds, o.rate)
        gen = generator(seed, "prune")
        total = sum(layer_sizes(model).values())
        rewind = copy.deepcopy(model)
        hooks = None
        if o.rewind_iteration > 0:
            steps = {"n": 0}

            def after_step(m):
                steps["n"] += 1
                if steps["n"] == o.rewind_iteration:
                    rewind.load_state_dict(m.state_dict())
            hooks = Hooks(after_step=after_step)
        histories, epoch = [], 0
        for rnd in range(len(schedule) + 1):
            if rnd > 0:
                # one step of the base's loop: the exact-k mask of |w| after training
                prune_to(model, self.scores(model, seed=seed, data_shape=tuple(data.info.shape), generator=gen),
                         schedule[rnd - 1], gen, o.scope)
                masks = get_masks(model)
                model.load_state_dict(rewind.state_dict())
                set_masks(model, masks)
                init_model = copy.deepcopy(model)
            else:
                init_model = copy.deepcopy(model)
            h = train(model, data, train_cfg, seed=seed, hooks=hooks if rnd == 0 else None,
                      phase=f"imp_r{rnd}", epoch_offset=epoch, log_initial=True, progress=progress,
                      desc=f"{self.name} r{rnd}")
            if rnd == 0 and o.rewind_iteration > 0 and steps["n"] < o.rewind_iteration:
                raise UserError(f"rewind_iteration {o.rewind_iteration} exceeds the "
                                f"{steps['n']} iterations of one training")
            histories.append(h)
            epoch += train_cfg.epochs + 1  # each round's row 0 gets its own epoch number
        history = pd.concat(histories, ignore_index=True)
        info = {"imp_densities": [1.0] + [kept_count(d, total) / total for d in schedule],
                "rewind_iteration": o.rewind_iteration, "rate": o.rate}
        return {self.name: MethodResult(model, init_model, history, info=info)}
