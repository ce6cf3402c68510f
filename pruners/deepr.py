"""DEEPR and Soft-DEEPR (Bellec et al. 2018, arXiv 1711.05136), SPEC §8.4.

A drop-in for the DeepRewire package (``deep_rewire``): ``convert``/``reconvert`` (also
under their former names ``convert_to_deep_rewireable``/``convert_from_deep_rewireable``),
``DEEPR``, ``SoftDEEPR``, ``SoftDEEPRWrapper``, ``NonTrainableParameter`` and
``measure_sparsity`` take DeepRewire's arguments, with its bugs fixed:

* every parameter the conversion creates is returned (the negative half of a
  ``"second_bias"`` is rewireable, not lost); the signs are buffers, in neither list;
* ``reset_val=0`` (DeepRewire's default) is replaced by the smallest positive value,
  so a re-activated entry really is active (θ > 0) and exactly ``nc`` stay active;
* the initial connections are drawn without replacement (exact count);
* the sign-flip forward is a ``torch.nn.utils.parametrize`` parametrization, so
  masks, ``state_dict``, ``deepcopy``, ``.to()`` and ``.double()`` behave as for every
  other method.

The conversion (rewireable weights W = s·relu(θ), active iff θ > 0) lives in
:mod:`pruners.deepr_compat`, the optimizers (plain SGD, alone and stacked) in
:mod:`pruners.deepr_optim`; both are re-exported here.  This module holds the
``deepr``/``soft-deepr`` methods.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from models.masks import prunable_layers, raw_weight
from utils.errors import UserError

from .base import Method, MethodResult, MethodStyle, check_density, kept_count, register
from .deepr_compat import (  # noqa: F401  (DeepRewire's names, importable from here as before)
    BIAS_MODES,
    NonTrainableParameter,
    RewireableBias,
    RewireableWeight,
    SecondBias,
    SoftDEEPRWrapper,
    _check_common,
    _closure_loss,
    _noise,
    _soft_defaults,
    convert,
    convert_from_deep_rewireable,
    convert_to_deep_rewireable,
    is_rewireable,
    measure_sparsity,
    reconvert,
    reconvert_masked,
    rewireable_layers,
    set_rewireable,
)
from .deepr_optim import (  # noqa: F401  (importable from here as before)
    DEEPR,
    SCOPES,
    SoftDEEPR,
    StackedDEEPR,
    _check_reset_val,
    _pick_dormant,
    _sample,
    langevin_step,
    layer_budgets,
    reactivate,
)

INITS = ("normal", "scaled")
INIT_LABELS = {"normal": "N(0, 1/fan_in)", "scaled": "N(0, 1/(fan_in*d_layer))"}


# --------------------------------------------------------------------------- methods
def _fan_in(weight: Tensor) -> int:
    return int(weight[0].numel()) if weight.dim() > 1 else 1


def _check_init(init: str) -> None:
    if init not in INITS:
        raise UserError(f"unknown init {init!r}; choose from {', '.join(INITS)}")


def _check_plain_sgd(train_cfg, name: str) -> None:
    if train_cfg.momentum or train_cfg.nesterov or train_cfg.weight_decay:
        raise UserError(f"{name} is plain SGD: set momentum 0, nesterov false and weight_decay 0 "
                        f"(got momentum {train_cfg.momentum}, nesterov {train_cfg.nesterov}, "
                        f"weight_decay {train_cfg.weight_decay})")


@torch.no_grad()
def init_rewiring(model: nn.Module, nc: int, *, seed: int, scope: str = "global",
                  reset_val: float = 1e-12, prune_generator: torch.Generator | None = None,
                  init: str = "normal") -> tuple[list[nn.Parameter], list[nn.Parameter], list[int]]:
    """Convert ``model`` (biases ignored) and initialise it as in Bellec's script.

    θ = |w₀| with w₀ ~ N(0, 1/fan_in) (torch's global RNG, the init stream) on exactly
    ``nc`` entries drawn without replacement from the ``prune`` stream (``scope="layer"``:
    :func:`layer_budgets` per layer), θ = −|w₀| elsewhere (dormant); signs s = ±1 from
    the ``sign`` stream.  Pass ``prune_generator`` to continue an existing prune stream
    (the methods then use it for the optimizer's noise and re-activation).
    ``init="scaled"`` draws w₀ ~ N(0, 1/(fan_in·d_l)) instead, d_l the layer's active
    fraction, so the pre-activation variance matches a dense N(0, 1/fan_in) layer
    (a deep net at low density otherwise starts with a vanishing signal).
    Returns ``(rewireable, other, budgets)``.
    """
    _check_init(init)
    from utils.engine.seeding import generator
    rewireable, other = convert_to_deep_rewireable(model, handle_biases="ignore", keep_signs=True)
    layers = rewireable_layers(model)
    sizes = [raw_weight(m).numel() for m in layers.values()]
    budgets = [nc] if scope == "global" else layer_budgets(nc, sizes)
    gen_prune = prune_generator if prune_generator is not None else generator(seed, "prune")
    gen_sign = generator(seed, "sign")
    if scope == "global":
        chosen = torch.randperm(sum(sizes), generator=gen_prune)[:nc]
        active_flat = torch.zeros(sum(sizes), dtype=torch.bool)
        active_flat[chosen] = True
        actives = list(torch.split(active_flat, sizes))
    else:
        actives = []
        for size, k in zip(sizes, budgets):
            a = torch.zeros(size, dtype=torch.bool)
            a[torch.randperm(size, generator=gen_prune)[:k]] = True
            actives.append(a)
    for layer, active in zip(layers.values(), actives):
        theta = raw_weight(layer)
        variance = 1 / _fan_in(theta)
        if init == "scaled":
            variance /= max(active.float().mean().item(), 1 / active.numel())
        w0 = torch.randn(theta.shape, dtype=theta.dtype) * math.sqrt(variance)
        magnitude = w0.abs()
        active = active.view(theta.shape)
        value = torch.where(active, magnitude.clamp(min=reset_val), -magnitude)
        signs = (torch.randint(0, 2, tuple(theta.shape), generator=gen_sign) * 2 - 1).to(theta.dtype)
        set_rewireable(layer, value.to(theta.device), signs.to(theta.device))
    return rewireable, other, budgets


def _signs_extras(model: nn.Module) -> dict[str, Tensor]:
    return {f"signs.{name}": layer.parametrizations.weight[-1].weight_signs.detach().cpu().to(torch.int8)
            for name, layer in rewireable_layers(model).items()}


def _connectivity_columns(model: nn.Module) -> dict:
    layers = rewireable_layers(model)
    active = sum(int(m.parametrizations.weight[-1].current_mask().sum()) for m in layers.values())
    total = sum(raw_weight(m).numel() for m in layers.values())
    return {"connectivity": active / max(total, 1), "n_active": active}


def _groups(rewireable, other) -> list[dict]:
    groups = [{"params": rewireable}]
    if other:
        groups.append({"params": other, "rewire": False})
    return groups


@dataclass
class DEEPROptions:
    """DEEPR's options: ``l1`` (1e-4), ``temp`` (None -> lr/210), ``reset_val`` (1e-12), ``scope``
    (``"global"`` or ``"layer"``), ``init`` (``"normal"``: w₀ ~ N(0, 1/fan_in) as in Bellec's
    script and SPEC; ``"scaled"``: N(0, 1/(fan_in·d_layer)), see :func:`init_rewiring`)."""
    l1: float = 1e-4
    temp: float | None = None
    reset_val: float = 1e-12
    scope: str = "global"
    init: str = "normal"

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise UserError(f"unknown scope {self.scope!r}; choose 'global' or 'layer'")
        if not self.reset_val > 0:
            raise UserError(f"reset_val must be > 0, got {self.reset_val}")
        _check_init(self.init)


@register
class DeepRMethod(Method):
    """DEEPR on our grid (SPEC §6): exactly nc = round(d·N) active weights throughout.

    Biases and other non-prunable parameters get plain SGD; the lr, epochs, batch and
    schedule come from the run's TrainConfig (FC protocol: lr 0.1 constant, 25 epochs,
    batch 64), and the lr applies to θ.  Options: :class:`DEEPROptions`.
    """
    name = "deepr"
    Options = DEEPROptions
    style = MethodStyle("DEEPR", "deepr", "#332288", "X")

    def check_train(self, train_cfg) -> None:
        _check_plain_sgd(train_cfg, self.name)

    def run(self, model, data, density, train_cfg, *, seed, progress=True):
        from utils.engine.train import Hooks, train
        init_model, entry = self.start_batched(model, density, seed=seed, data_shape=tuple(data.info.shape),
                                               train_cfg=train_cfg)
        rewire = entry["rewire"]
        budgets = rewire["budgets"]
        optimizer = DEEPR(_groups(*rewire["params"]), nc=budgets[0] if self.options.scope == "global" else budgets,
                          lr=train_cfg.lr, generator=rewire["generator"], **rewire["options"])
        history = train(model, data, train_cfg, seed=seed, optimizer=optimizer,
                        hooks=Hooks(columns=entry["columns"], stateless=True), progress=progress, desc=self.name)
        return self.finish_batched(model, init_model, history, entry)

    # Batched (utils.engine.batched): θ stacked, W = s·relu(θ), each run rewired as its own DEEPR.
    def batch_kind(self) -> str:
        # the group shares l1, temp, reset_val and scope (one StackedDEEPR): runs with other options apart
        return "deepr " + json.dumps(asdict(self.options), sort_keys=True)

    def start_batched(self, model, density, *, seed, data_shape, train_cfg=None):
        from utils.engine.seeding import generator
        o = self.options
        density = check_density(density)
        if train_cfg is None:
            raise UserError("DEEPR needs the run's training config (its lr sets the default temperature)")
        self.check_train(train_cfg)
        n_total = sum(raw_weight(m).numel() for m in prunable_layers(model).values())
        nc = kept_count(density, n_total)
        gen = generator(seed, "prune")
        rewireable, other, budgets = init_rewiring(model, nc, seed=seed, scope=o.scope, reset_val=o.reset_val,
                                                   prune_generator=gen, init=o.init)
        init_model = reconvert_masked(copy.deepcopy(model))
        temp = o.temp if o.temp is not None else train_cfg.lr / 210
        signs = [layer.parametrizations.weight[-1].weight_signs for layer in rewireable_layers(model).values()]
        rewire = {"signs": signs, "budgets": [nc] if o.scope == "global" else budgets, "generator": gen,
                  "params": (rewireable, other),
                  "options": {"l1": o.l1, "temp": temp, "reset_val": o.reset_val, "scope": o.scope}}
        info = {"nc": nc, "scope": o.scope, "budgets": budgets, "l1": o.l1, "temp": temp,
                "reset_val": o.reset_val, "lr": train_cfg.lr, "init": INIT_LABELS[o.init],
                "biases": "plain SGD, not rewired", "density_achieved": nc / n_total}
        return init_model, {"rewire": rewire, "columns": _connectivity_columns, "info": info}

    def finish_batched(self, model, init_model, history, entry=None):
        extras = _signs_extras(model)
        reconvert_masked(model)
        return {self.name: MethodResult(model, init_model, history, extras, info=entry["info"])}


@dataclass
class SoftDEEPROptions:
    """Soft-DEEPR's options: ``l1`` (1e-5), ``temp`` (None -> lr·l1²/18), ``min_weight``
    (None -> −3·l1), ``init_density`` (None -> the run's density), ``init`` (as for ``deepr``)."""
    l1: float = 1e-5
    temp: float | None = None
    min_weight: float | None = None
    init_density: float | None = None
    init: str = "normal"

    def __post_init__(self):
        _check_init(self.init)


@register
class SoftDeepRMethod(Method):
    """Soft-DEEPR on our grid: starts with exactly round(d·N) active weights (as DEEPR)
    and ends at whatever connectivity the sampler reaches (``info["density_achieved"]``).
    Options: :class:`SoftDEEPROptions`.
    """
    name = "soft-deepr"
    Options = SoftDEEPROptions
    style = MethodStyle("Soft-DEEPR", "sdeepr", "#88CCEE", "x")

    def check_train(self, train_cfg) -> None:
        _check_plain_sgd(train_cfg, self.name)

    def run(self, model, data, density, train_cfg, *, seed, progress=True):
        from utils.engine.seeding import generator
        from utils.engine.train import Hooks, train
        o = self.options
        density = check_density(density)
        start_density = check_density(o.init_density) if o.init_density is not None else density
        self.check_train(train_cfg)
        n_total = sum(raw_weight(m).numel() for m in prunable_layers(model).values())
        n0 = kept_count(start_density, n_total)
        gen = generator(seed, "prune")
        rewireable, other, _ = init_rewiring(model, n0, seed=seed, prune_generator=gen, init=o.init)
        init_model = reconvert_masked(copy.deepcopy(model))
        temp = o.temp if o.temp is not None else train_cfg.lr * o.l1 ** 2 / 18
        min_weight = o.min_weight if o.min_weight is not None else -3 * o.l1
        optimizer = SoftDEEPR(_groups(rewireable, other), lr=train_cfg.lr, l1=o.l1, temp=temp,
                              min_weight=min_weight, generator=gen)
        history = train(model, data, train_cfg, seed=seed, optimizer=optimizer,
                        hooks=Hooks(columns=_connectivity_columns), progress=progress, desc=self.name)
        extras = _signs_extras(model)
        achieved = _connectivity_columns(model)["connectivity"]
        reconvert_masked(model)
        info = {"initial_active": n0, "density_initial": n0 / n_total, "density_target": density,
                "density_achieved": achieved,
                "connectivity_min": min(optimizer.connectivity_log, default=achieved),
                "connectivity_max": max(optimizer.connectivity_log, default=achieved), "l1": o.l1, "temp": temp,
                "min_weight": min_weight,
                "lr": train_cfg.lr, "init": INIT_LABELS[o.init], "biases": "plain SGD, not rewired"}
        return {self.name: MethodResult(model, init_model, history, extras, info=info)}
