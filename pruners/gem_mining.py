"""Gem-Miner's mining pieces (SPEC §8.3): the BottomK schedule arithmetic, the score/flag
parametrization :class:`GemMinerMask`, flag pruning, and :class:`Mining`, one run's per-step and
per-epoch rules shared by the loop that mines it alone and the stacked loop.  The method is
:class:`pruners.gem_miner.GemMiner`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from models.masks import density as model_density
from models.masks import prunable_layers, raw_weight, replace_parametrization
from utils.engine.seeding import generator
from utils.errors import UserError

from .base import Method, kept_count, select_global

# --------------------------------------------------------------------------- schedule arithmetic

def num_prunes(epochs: int, period: float) -> int:
    """P = ⌊(E−1)/T⌋: prunes happen after 0-based epochs e with e % T == 0 and e ≠ 0, e ≤ E−1
    (a fractional T prunes every T epochs of training, counted in steps: see :class:`GemMiner`)."""
    if not period > 0 or (period >= 1 and period != int(period)):
        raise UserError(f"Gem-Miner period must be a whole number of epochs ≥ 1 or a fraction in (0, 1), "
                        f"got {period}")
    return int(max(epochs - 1, 0) // period)


def prune_rate(density: float, prunes: int) -> float:
    """Per-prune fraction r = 1 − d^(1/P) of the remaining flags (float64); 0 if P = 0."""
    return 0.0 if prunes <= 0 else 1.0 - float(density) ** (1.0 / prunes)


def prune_count(n_flags: int, rate: float) -> int:
    """Flags removed by one BottomK prune: ⌈r·#flags⌉ in float64."""
    return min(int(math.ceil(rate * n_flags)), n_flags)


def flag_schedule(total: int, density: float, prunes: int) -> list[int]:
    """Flag counts after each of the ``prunes`` BottomK prunes of ``total`` weights (SPEC §3)."""
    rate, n, out = prune_rate(density, prunes), total, []
    for _ in range(prunes):
        n -= prune_count(n, rate)
        out.append(n)
    return out


# --------------------------------------------------------------------------- parametrization

class GemMinerMask(nn.Module):
    """Parametrization ``W -> W · m`` with m = STE(1[s > 0.5]) · f.

    ``scores`` is a trainable Parameter in [0, 1] (init U(0, 1) from ``generator``);
    ``flag`` a bool buffer (init all True).  The forward value is exactly
    1[s > 0.5]·f (computed as ``hard + (s − s.detach())``, which equals ``hard`` bit for
    bit), and ∂/∂s passes the gradient straight through: ∂L/∂s = ∂L/∂m · f.  So the live
    model *is* the rounded model in the forward pass.
    """

    def __init__(self, shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        scores = torch.rand(tuple(shape), generator=generator, dtype=torch.float32)
        self.scores = nn.Parameter(scores.to(device) if device is not None else scores)
        self.register_buffer("flag", torch.ones(tuple(shape), dtype=torch.bool, device=self.scores.device))

    def forward(self, weight: Tensor) -> Tensor:
        s = self.scores
        hard = (s > 0.5).to(s.dtype)
        m = (hard + (s - s.detach())) * self.flag.to(s.dtype)
        return weight * m.to(weight.dtype)

    def current_mask(self) -> Tensor:
        return self.flag & (self.scores.detach() > 0.5)


def gem_masks(model: nn.Module) -> dict[str, GemMinerMask]:
    """The :class:`GemMinerMask` of every prunable layer (looked up afresh: ``.to()`` may swap buffers)."""
    out = {}
    for name, module in prunable_layers(model).items():
        p = module.parametrizations.weight[-1] if hasattr(module, "parametrizations") else None
        if not isinstance(p, GemMinerMask):
            raise ValueError(f"layer {name} has no GemMinerMask")
        out[name] = p
    return out


def attach_gem_masks(model: nn.Module, gen: torch.Generator) -> None:
    """Replace every prunable layer's parametrization by a fresh :class:`GemMinerMask`."""
    for module in prunable_layers(model).values():
        w = raw_weight(module)
        replace_parametrization(module, GemMinerMask(w.shape, gen, device=w.device))


@torch.no_grad()
def signed_constant_(model: nn.Module) -> None:
    """w = sign(w₀)·√2/√fan_in on every prunable weight, fan_in = c_in·k·k (sign(0) → +1)."""
    for module in prunable_layers(model).values():
        w = raw_weight(module)
        fan_in = w[0].numel()
        sign = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        w.copy_(sign * math.sqrt(2.0 / fan_in))


def count_flags(model: nn.Module) -> int:
    return sum(int(p.flag.sum()) for p in gem_masks(model).values())


def count_effective(model: nn.Module) -> int:
    return sum(int(p.current_mask().sum()) for p in gem_masks(model).values())


@torch.no_grad()
def keep_top_flags(model: nn.Module, n_keep: int, gen: torch.Generator, scope: str = "global") -> None:
    """Keep the flags of the ``n_keep`` largest |s| among flagged weights (exact count, seeded ties).

    ``scope="layer"``: each layer keeps round(n_keep/N · N_layer) of its flags instead.
    """
    masks = gem_masks(model)
    keep = select_global({n: p.scores.detach().abs() for n, p in masks.items()}, n_keep,
                         {n: p.flag for n, p in masks.items()}, gen, scope=scope)
    for n, p in masks.items():
        p.flag.copy_(keep[n].to(p.flag.device) & p.flag)


def bottom_k_prune(model: nn.Module, rate: float, gen: torch.Generator, scope: str = "global") -> int:
    """One BottomK step: unflag the ⌈r·#flags⌉ smallest |s| among f = 1 (globally, or in each
    layer with ``scope="layer"``). Returns #flags left."""
    n_flags = count_flags(model)
    keep_top_flags(model, n_flags - prune_count(n_flags, rate), gen, scope)
    return count_flags(model)


class Mining:
    """One run's mining state and per-step / per-epoch rules (SPEC §8.3), shared by the loop that
    trains it alone (``train`` hooks) and the stacked loop (:meth:`pruners.gem_miner.GemMiner.mine_batched`)."""

    def __init__(self, method: Method, model: nn.Module, data, density: float, train_cfg, *, seed: int,
                 epochs: int, monitor: Callable[[int, nn.Module], None] | None = None):
        o = method.options
        self.model, self.options, self.density, self.monitor = model, o, density, monitor
        self.total = sum(p.flag.numel() for p in gem_masks(model).values())
        self.prunes = num_prunes(epochs, o.period)
        self.rate = prune_rate(density, self.prunes)
        self.gen = generator(seed, "prune")
        self.state = {"prune_epochs": [], "stopped": None, "frozen": None, "step": 0, "epoch": None}
        self.steps_per_epoch = math.ceil(len(data.train_y) / o.batch_size)
        # fractional periods: prune after these steps (the k-th prune after k·T epochs of training)
        self.prune_steps = ({round(k * o.period * self.steps_per_epoch) for k in range(1, self.prunes + 1)}
                            if o.period < 1 else set())
        self.evaluated = method._columns(data, train_cfg, lambda m: count_flags(m) / self.total)

    def state_dict(self) -> dict:
        """What the mining keeps between epochs (for :mod:`utils.engine.checkpoint`): the prune
        record and the BottomK generator."""
        return {"state": self.state, "gen": self.gen.get_state()}

    def load_state_dict(self, saved: dict) -> None:
        self.state = dict(saved["state"])
        self.gen.set_state(saved["gen"])

    def reg(self, m: nn.Module) -> Tensor:
        return self.options.score_l2 * sum((p.scores ** 2).sum() for p in gem_masks(m).values())

    def count_step(self) -> bool:
        """Count one optimizer step; whether a (fractional-period) prune is due now."""
        self.state["step"] += 1
        return self.state["step"] in self.prune_steps and self.state["stopped"] is None

    def prune_now(self, m: nn.Module) -> None:
        bottom_k_prune(m, self.rate, self.gen, self.options.scope)
        self.state["prune_epochs"].append(round(self.state["step"] / self.steps_per_epoch, 4))

    @torch.no_grad()
    def after_step(self, m: nn.Module) -> None:
        for name, p in gem_masks(m).items():
            if self.state["frozen"] is not None:
                p.scores.copy_(self.state["frozen"][name])
            else:
                p.scores.clamp_(0.0, 1.0)
        if self.count_step():
            self.prune_now(m)

    def after_epoch(self, epoch: int, m: nn.Module) -> dict:
        self.state["epoch"] = epoch
        with torch.no_grad():
            return {"reg_loss": float(self.reg(m)) if self.options.score_l2 else 0.0}

    def prune_after(self, epoch: int, m: nn.Module) -> None:
        o, state = self.options, self.state
        if (state["stopped"] is None and o.period >= 1 and epoch % o.period == 0 and epoch != 0
                and len(state["prune_epochs"]) < self.prunes):
            bottom_k_prune(m, self.rate, self.gen, o.scope)
            state["prune_epochs"].append(epoch)
        if state["stopped"] is None and count_effective(m) == 0:
            # Effective density hit 0: stop mining, prune the flags straight to the target.
            keep_top_flags(m, kept_count(self.density, self.total), self.gen, o.scope)
            state["stopped"] = epoch
            state["frozen"] = {n: p.scores.detach().clone() for n, p in gem_masks(m).items()}
        if self.monitor is not None:
            self.monitor(epoch, m)

    def columns(self, m: nn.Module) -> dict:
        # Row e as the thesis logged it (upstream hc_iter): the accuracies of the net trained
        # through epoch e, then epoch e's prune, then the densities after it.  The prune
        # falls between epochs e and e+1 either way; evaluated after it, the net would show
        # BN statistics of the unpruned net (its top-1 dips one row early, e.g. at the
        # thesis's ResNet-20 2 % epoch 61, not 60).
        row = self.evaluated(m)
        self.prune_after(self.state["epoch"], m)
        effective = model_density(m)
        return {**row, "density": effective, "density_effective": effective,
                "density_flag": count_flags(m) / self.total}

    def facts(self) -> dict:
        """The mining's record (``run.json``), from the model after mining."""
        return {"prunes": len(self.state["prune_epochs"]), "prune_epochs": self.state["prune_epochs"],
                "planned_prunes": self.prunes, "prune_rate": self.rate, "stopped_at_epoch": self.state["stopped"],
                "flags": count_flags(self.model), "effective_mined": count_effective(self.model),
                "total": self.total}
