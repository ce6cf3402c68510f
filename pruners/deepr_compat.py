"""The DeepRewire compatibility layer (``deep_rewire`` 1.0.5): rewireable weights on the project's
mask format, and DeepRewire's ``convert``/``reconvert``/``measure_sparsity``.

A rewireable weight is W = s·relu(θ): θ is the trainable tensor behind ``weight``
(``parametrizations.weight.original``), s a fixed ±1 buffer ``weight_signs``.  An
entry is *active* iff θ > 0 (θ ≤ 0 is *dormant*); ``current_mask()`` is θ > 0.
:func:`convert_from_deep_rewireable` turns the net back into a plain PyTorch net
(weight ← s·relu(θ)); :func:`reconvert_masked` into the project's masked format
(plus mask ← θ > 0), which is what the runs store and the analyses read.

The sign-flip forward is a ``torch.nn.utils.parametrize`` parametrization, so masks,
``state_dict``, ``deepcopy``, ``.to()`` and ``.double()`` behave as for every other method;
the differences from DeepRewire are listed in ``pruners/README.md``.  Everything here is
also importable from :mod:`pruners.deepr` (and the public names from :mod:`pruners`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from models.masks import prunable_layers, raw_weight, replace_parametrization, set_masks

BIAS_MODES = ("ignore", "as_connections", "second_bias")


# --------------------------------------------------------------------------- parametrizations
class RewireableWeight(nn.Module):
    """Parametrization θ -> s·relu(θ) with a fixed ±1 buffer ``weight_signs``.

    ``current_mask()`` is θ > 0, read from the layer it is attached to.
    """

    def __init__(self, signs: Tensor, layer: nn.Module):
        super().__init__()
        self.register_buffer("weight_signs", signs.detach().clone())
        # A plain attribute, not a submodule (that would make a module cycle).
        object.__setattr__(self, "_layer", layer)

    def forward(self, theta: Tensor) -> Tensor:
        return torch.relu(theta) * self.weight_signs

    def theta(self) -> Tensor:
        return self._layer.parametrizations.weight.original

    def current_mask(self) -> Tensor:
        return self.theta().detach() > 0


class RewireableBias(nn.Module):
    """``handle_biases="as_connections"``: b = s_b·relu(β) with a fixed ±1 buffer ``bias_signs``."""

    def __init__(self, signs: Tensor):
        super().__init__()
        self.register_buffer("bias_signs", signs.detach().clone())

    def forward(self, beta: Tensor) -> Tensor:
        return torch.relu(beta) * self.bias_signs


class SecondBias(nn.Module):
    """``handle_biases="second_bias"``: b = relu(b⁺) − relu(b⁻); b⁺ is the original, b⁻ ``negative``."""

    def __init__(self, negative: Tensor):
        super().__init__()
        self.negative = nn.Parameter(negative.detach().clone())

    def forward(self, positive: Tensor) -> Tensor:
        return torch.relu(positive) - torch.relu(self.negative)


class NonTrainableParameter(nn.Parameter):
    """An ``nn.Parameter`` whose ``requires_grad`` is always False (DeepRewire's holder of the signs).

    Setting ``requires_grad`` is silently ignored, as in DeepRewire.  The conversion here
    keeps the signs in buffers instead, which no optimizer or ``parameters()`` sees;
    the class exists for code that builds its own fixed tensors with it.

    Example::

        >>> p = NonTrainableParameter(torch.ones(3))
        >>> p.requires_grad = True
        >>> p.requires_grad
        False
    """

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = False):
        return super().__new__(cls, data, requires_grad=False)

    @property
    def requires_grad(self) -> bool:
        return False

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        # Ignored rather than raising: DeepRewire's users (and nn.Module.requires_grad_())
        # set it on every parameter of a model.
        pass


def _unshare_class(module: nn.Module) -> None:
    """Give a parametrized module its own class before changing its parametrizations.

    ``torch.nn.utils.parametrize`` keeps the parametrized properties on a per-module
    dynamic class, and ``copy.deepcopy`` shares that class between the original and the
    copy; removing or adding a parametrization on one would then delete or add the
    property on the other too (e.g. converting a deep copy back broke the original).
    """
    if not parametrize.is_parametrized(module):
        return
    cls = type(module)
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, namespace)


def _random_signs(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    bits = torch.randint(0, 2, tuple(shape), generator=generator)
    return (bits * 2 - 1).to(device=like.device, dtype=like.dtype)


def _sign_of(w: Tensor) -> Tensor:
    """sign(w) with 0 -> +1."""
    return torch.where(w < 0, -1.0, 1.0).to(w.dtype)


def _activity(magnitude: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
    """θ = |w| where active (probability p), −|w| elsewhere."""
    active = torch.rand(tuple(magnitude.shape), generator=generator) < p
    return torch.where(active.to(magnitude.device), magnitude, -magnitude)


def _signs_and_theta(w: Tensor, keep_signs: bool, active_probability: float | None,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Fixed signs s and trainable θ with s·relu(θ) = w on the active entries (any shape).

    ``keep_signs``: s = sign(w), θ = |w| (all active).  Otherwise s is random and θ = s·w
    (active where the draw agrees with w's sign).  ``active_probability`` then redraws
    which entries are active: θ = ±|w|.
    """
    signs = _sign_of(w) if keep_signs else _random_signs(w.shape, w, generator)
    theta = w.abs() if keep_signs else signs * w
    if active_probability is not None:
        theta = _activity(w.abs(), active_probability, generator)
    return signs, theta


def is_rewireable(layer: nn.Module) -> bool:
    return (parametrize.is_parametrized(layer, "weight")
            and isinstance(layer.parametrizations.weight[-1], RewireableWeight))


def rewireable_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Converted (Linear/Conv2d) layers by qualified name."""
    return {n: m for n, m in module.named_modules() if is_rewireable(m)}


@torch.no_grad()
def set_rewireable(layer: nn.Module, theta: Tensor, signs: Tensor) -> None:
    """Overwrite θ and the signs of one converted layer in place."""
    param = layer.parametrizations.weight
    param.original.copy_(theta)
    param[-1].weight_signs.copy_(signs)


# --------------------------------------------------------------------------- conversion
def _convert_weight(layer: nn.Module, keep_signs: bool, active_probability: float | None,
                    generator: torch.Generator | None) -> nn.Parameter:
    """Make one plain or masked layer's weight s·relu(θ); returns θ (the same Parameter object)."""
    w = layer.weight.detach().clone()          # effective weight (masked)
    signs, theta = _signs_and_theta(w, keep_signs, active_probability, generator)
    _unshare_class(layer)
    replace_parametrization(layer, RewireableWeight(signs, layer))
    raw_weight(layer).copy_(theta)
    return raw_weight(layer)


def _convert_bias(layer: nn.Module, handle_biases: str, keep_signs: bool, active_probability: float | None,
                  generator: torch.Generator | None) -> list[nn.Parameter]:
    """Rewire one layer's bias as ``handle_biases`` says; returns the tensors to rewire (maybe none)."""
    bias = getattr(layer, "bias", None)
    if bias is None or handle_biases == "ignore":
        return []
    b = bias.detach().clone()
    if handle_biases == "as_connections":
        signs, beta = _signs_and_theta(b, keep_signs, active_probability, generator)
        parametrize.register_parametrization(layer, "bias", RewireableBias(signs), unsafe=True)
        layer.parametrizations.bias.original.copy_(beta)
        return [layer.parametrizations.bias.original]
    # second_bias: b⁺ = b, b⁻ = −b, so exactly the half with b's sign is active and b is kept
    parametrize.register_parametrization(layer, "bias", SecondBias(-b), unsafe=True)
    return [layer.parametrizations.bias.original, layer.parametrizations.bias[0].negative]


def _reconvert_layer(layer: nn.Module) -> None:
    """Plain ``weight`` ← s·relu(θ) and plain ``bias`` ← its effective value, in place.

    The Parameter objects are kept (``remove_parametrizations`` rewrites them in place),
    so optimizers built on θ stay valid; the signs and b⁻ are dropped.
    """
    _unshare_class(layer)
    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    if parametrize.is_parametrized(layer, "bias") and isinstance(
            layer.parametrizations.bias[-1], (RewireableBias, SecondBias)):
        parametrize.remove_parametrizations(layer, "bias", leave_parametrized=True)
    bias = layer.bias
    if bias is not None and not parametrize.is_parametrized(layer, "bias"):
        # re-register the bias after the weight: the state-dict order of an unconverted layer
        del layer.bias
        layer.register_parameter("bias", bias)


@torch.no_grad()
def convert_to_deep_rewireable(module: nn.Module, handle_biases: str = "second_bias",
                               active_probability: float | None = None, keep_signs: bool = False,
                               generator: torch.Generator | None = None
                               ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Make every prunable layer (Linear/Conv2d) of ``module`` rewireable, in place.

    DeepRewire's ``convert`` (alias :func:`convert`).  Converting an already converted
    model is accepted, as in DeepRewire: each converted layer is first turned back into
    its effective weights (:func:`convert_from_deep_rewireable`) and then converted again.

    Args:
        module: any module; each prunable layer's effective weight w, shape (out, in) or
            (out, in, kh, kw) (through its current mask, if any), becomes W = s·relu(θ)
            with θ and s of the same shape.
        handle_biases: ``"ignore"`` (biases stay plain, returned in ``other_params``),
            ``"as_connections"`` (b = s_b·relu(β), a fixed sign, rewired like a weight) or
            ``"second_bias"`` (b = relu(b⁺) − relu(b⁻), both halves rewireable; b⁺ = b,
            b⁻ = −b, so the bias is preserved).
        active_probability: if given, each connection is active with this probability:
            θ = |w| if active, else −|w| (applies to weights and ``as_connections`` biases).
        keep_signs: s = sign(w) (0 -> +1) and θ = |w|, so the function is preserved.
            Otherwise s is random (from ``generator``) and θ = s·w.
        generator: RNG for random signs and activity; default torch's global RNG.

    Returns:
        ``(rewireable_params, other_params)``: the θ's (and rewired bias halves, b⁻
        included: DeepRewire returns it in neither list, so it was never trained) for
        :class:`DEEPR`/:class:`SoftDEEPR`, and every other parameter of ``module``
        (for any optimizer).  Together they are exactly ``module.parameters()``; the
        signs are buffers, in neither list.

    Example::

        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> rewireable, other = convert(net)      # 2 weights + 2×(b⁺, b⁻); other == []
        >>> opt = SoftDEEPR(rewireable, lr=0.05, l1=1e-5)
    """
    if handle_biases not in BIAS_MODES:
        raise ValueError(f"handle_biases must be one of {BIAS_MODES}, got {handle_biases!r}")
    if active_probability is not None and not 0 <= active_probability <= 1:
        raise ValueError(f"active_probability must be in [0, 1], got {active_probability}")
    rewireable: list[nn.Parameter] = []
    for layer in prunable_layers(module).values():
        if is_rewireable(layer):
            _reconvert_layer(layer)
        rewireable.append(_convert_weight(layer, keep_signs, active_probability, generator))
        rewireable += _convert_bias(layer, handle_biases, keep_signs, active_probability, generator)
    ids = {id(p) for p in rewireable}
    other = [p for p in module.parameters() if id(p) not in ids]
    return rewireable, other


@torch.no_grad()
def convert_from_deep_rewireable(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_to_deep_rewireable` in place: a plain PyTorch model again.

    DeepRewire's ``reconvert`` (alias :func:`reconvert`).  Each converted layer gets a
    plain ``weight`` parameter holding the effective signed weights s·relu(θ) (0 where
    dormant) and a plain ``bias`` (s_b·relu(β) or relu(b⁺) − relu(b⁻)); no
    parametrization, sign or mask buffers remain, so the state-dict keys are those of
    the unconverted ``nn.Linear``/``nn.Conv2d``.  The same Parameter objects are kept.
    A layer that carried a project mask before conversion comes back plain too: use
    :func:`reconvert_masked` for the masked format.  Layers that are not converted are
    left alone.

    Returns:
        ``module`` (DeepRewire returns None), so ``net = reconvert(net)`` also works.

    Example::

        >>> net = nn.Linear(4, 3)
        >>> _ = convert(net)
        >>> sorted(reconvert(net).state_dict())
        ['bias', 'weight']
    """
    for layer in rewireable_layers(module).values():
        _reconvert_layer(layer)
    return module


def reconvert_masked(module: nn.Module) -> nn.Module:
    """Undo the conversion into the project's masked format, in place; returns ``module``.

    Each converted layer gets weight ← s·relu(θ) under a plain :class:`models.masks.Mask`
    with mask = θ > 0 (state-dict keys ``parametrizations.weight.original`` and
    ``parametrizations.weight.0.mask``), which is what the runs store and the analyses
    read; biases become plain as in :func:`convert_from_deep_rewireable`.
    """
    masks = {name: layer.parametrizations.weight[-1].current_mask().clone()
             for name, layer in rewireable_layers(module).items()}
    convert_from_deep_rewireable(module)
    set_masks(module, masks, zero_pruned=False)
    return module


convert = convert_to_deep_rewireable
reconvert = convert_from_deep_rewireable


def _effective_tensors(module: nn.Module) -> list[Tensor]:
    """What ``module`` computes with: each parametrized tensor's value (s·relu(θ), W·mask,
    relu(b⁺) − relu(b⁻)) in place of its originals, plus every plain parameter."""
    inside = {id(sub) for m in module.modules() if parametrize.is_parametrized(m)
              for sub in m.parametrizations.modules()}
    tensors = []
    for m in module.modules():
        if id(m) in inside:        # originals and b⁻: folded into their layer's tensor
            continue
        if parametrize.is_parametrized(m):
            tensors += [getattr(m, name) for name in m.parametrizations]
        tensors += list(m.parameters(recurse=False))
    return tensors


@torch.no_grad()
def measure_sparsity(parameters: Tensor | Iterable[Tensor] | nn.Module, threshold: float = 0) -> float:
    """Fraction of zero entries (DeepRewire's ``deep_rewire.utils.measure_sparsity``).

    Args:
        parameters: a tensor, an iterable of tensors (e.g. ``model.parameters()``) or a
            module.  For a module the effective tensors are counted: a converted weight
            s·relu(θ) is 0 exactly where θ ≤ 0 (DeepRewire's rule), a masked weight where
            masked, and b⁻ is part of its bias rather than a tensor of its own.
        threshold: if > 0, count entries with |x| < threshold instead of x == 0.

    Returns:
        #zeros / #entries over all tensors (a float in [0, 1]).

    Example::

        >>> measure_sparsity([torch.tensor([0.0, 1.0]), torch.zeros(2, 3)])
        0.875
    """
    if isinstance(parameters, nn.Module):
        tensors = _effective_tensors(parameters)
    elif isinstance(parameters, Tensor):
        tensors = [parameters]
    else:
        tensors = list(parameters)
    total = sum(t.numel() for t in tensors)
    if total == 0:
        raise ValueError("measure_sparsity needs at least one entry")
    zeros = sum(int((t.abs() < threshold).sum()) if threshold else int((t == 0).sum()) for t in tensors)
    return zeros / total


# --------------------------------------------------------------------------- optimizer helpers
# (shared with the optimizers in pruners.deepr, which imports them from here)
def _check_common(lr: float, l1: float, temp: float) -> None:
    if lr < 0:
        raise ValueError(f"invalid learning rate {lr}")
    if l1 < 0:
        raise ValueError(f"invalid L1 coefficient {l1}")
    if temp < 0:
        raise ValueError(f"invalid temperature {temp}")


def _soft_defaults(lr: float, l1: float, temp: float | None, min_weight: float | None) -> tuple[float, float]:
    """Soft-DEEPR's defaults (temp = lr·l1²/18, min_weight = −3·l1), checked; returns (temp, min_weight)."""
    temp = lr * l1 ** 2 / 18 if temp is None else temp
    min_weight = -3 * l1 if min_weight is None else min_weight
    _check_common(lr, l1, temp)
    if min_weight > 0:
        raise ValueError(f"min_weight must be ≤ 0, got {min_weight}")
    return temp, min_weight


def _closure_loss(closure) -> Tensor | None:
    """Evaluate an optimizer ``closure`` with gradients on (``step`` runs under no_grad)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _noise(p: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn_like(p) * std
    return torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) * std


# --------------------------------------------------------------------------- SoftDEEPRWrapper
class SoftDEEPRWrapper(torch.optim.Optimizer):
    """Soft-DEEPR's rewiring around any torch optimizer (DeepRewire's ``SoftDEEPRWrapper``).

    The base optimizer (SGD, Adam, ...) makes the gradient step; around it, for each
    tensor θ that has a gradient (the others are skipped, as the base optimizer skips them):

    1. the gradient of dormant entries (θ ≤ 0) is zeroed, active ones get the L1 step
       θ ← θ − lr·l1, and every entry gets noise √(2·lr·temp)·N(0, 1);
    2. ``base_optim.step()``;
    3. θ ← max(θ, min_weight).

    Args:
        params: rewireable tensors or groups (from :func:`convert`).
        base_optim_class: an optimizer class, built as ``base_optim_class(params, **optim_kwargs)``
            and kept as ``base_optim`` (its state, e.g. Adam's moments, lives there).
        l1: L1 coefficient on active θ.
        temp: default lr·l1²/18; lr is ``optim_kwargs["lr"]``, default 0.005 (DeepRewire).
        min_weight: default −3·l1.
        generator: RNG for the noise; default torch's global RNG.
        **optim_kwargs: arguments of the base optimizer.

    A closure is evaluated once, before the masking (DeepRewire hands it to the base
    optimizer, whose re-evaluation would overwrite the masked gradients).  Schedule the
    base optimizer's lr through ``base_optim``; this optimizer's ``lr`` scales the noise and L1.

    Example::

        >>> rewireable, _ = convert(nn.Linear(8, 4), active_probability=0.2)
        >>> opt = SoftDEEPRWrapper(rewireable, torch.optim.Adam, l1=0.05, lr=1e-3)
    """

    def __init__(self, params, base_optim_class: type[torch.optim.Optimizer], l1: float = 1e-5,
                 temp: float | None = None, min_weight: float | None = None,
                 generator: torch.Generator | None = None, **optim_kwargs):
        params = list(params)
        # each optimizer gets its own group dicts: Optimizer.add_param_group fills in its
        # defaults in place, and the two sets of defaults must not mix
        copies = lambda: [dict(g) if isinstance(g, dict) else g for g in params]
        self.base_optim = base_optim_class(copies(), **optim_kwargs)
        lr = optim_kwargs.get("lr", 0.005)
        temp, min_weight = _soft_defaults(lr, l1, temp, min_weight)
        super().__init__(copies(), dict(lr=lr, l1=l1, temp=temp, min_weight=min_weight))
        self.generator = generator

    def _with_grad(self):
        """(group, θ) for every tensor that has a gradient."""
        return [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group, p in self._with_grad():
            active = p > 0
            p.grad.mul_(active)
            std = math.sqrt(2 * group["lr"] * group["temp"])
            update = torch.where(active, -group["lr"] * group["l1"], 0.0).to(p.dtype)
            if std > 0:
                update = update + _noise(p, std, self.generator)
            p.add_(update)
        self.base_optim.step()
        for group, p in self._with_grad():
            p.clamp_(min=group["min_weight"])
        return loss
