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

A rewireable weight is W = s·relu(θ): θ is the trainable tensor behind ``weight``
(``parametrizations.weight.original``), s a fixed ±1 buffer ``weight_signs``.  An
entry is *active* iff θ > 0 (θ ≤ 0 is *dormant*); ``current_mask()`` is θ > 0.
:func:`convert_from_deep_rewireable` turns the net back into a plain PyTorch net
(weight ← s·relu(θ)); :func:`reconvert_masked` into the project's masked format
(plus mask ← θ > 0), which is what the runs store and the analyses read.

Both optimizers are plain SGD (no momentum, no weight decay): momentum or Adam would
break the Langevin-sampling interpretation.  Parameter groups may set
``rewire=False`` to be updated by plain SGD (e.g. biases that are not rewired); they
are not counted in the connection budget.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from models.masks import prunable_layers, raw_weight, replace_parametrization, set_masks
from utils.errors import UserError

from .base import Method, MethodResult, check_density, kept_count, register

BIAS_MODES = ("ignore", "as_connections", "second_bias")
SCOPES = ("global", "layer")
INITS = ("normal", "scaled")
INIT_LABELS = {"normal": "N(0, 1/fan_in)", "scaled": "N(0, 1/(fan_in*d_layer))"}


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


# --------------------------------------------------------------------------- optimizers
def layer_budgets(nc: int, sizes: Sequence[int]) -> list[int]:
    """Split ``nc`` over tensors proportionally to their sizes, summing exactly to ``nc``
    (largest remainder; ties to the earlier tensor)."""
    total = sum(sizes)
    if total == 0:
        return [0] * len(sizes)
    quotas = [nc * s / total for s in sizes]
    out = [min(int(math.floor(q)), s) for q, s in zip(quotas, sizes)]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - out[i]), i))
    left = nc - sum(out)
    for i in order:
        if left <= 0:
            break
        if out[i] < sizes[i]:
            out[i] += 1
            left -= 1
    return out


def _sample(n: int, k: int, generator: torch.Generator | None, device) -> Tensor:
    """``k`` distinct indices drawn uniformly from range(n) (rejection of repeats; exact
    uniform k-subset by symmetry)."""
    if k >= n:
        return torch.arange(n, device=device)
    if 2 * k > n:
        return torch.randperm(n, generator=generator)[:k].to(device)
    chosen = torch.empty(0, dtype=torch.long)
    while chosen.numel() < k:
        draw = torch.randint(0, n, (k - chosen.numel(),), generator=generator)
        chosen = torch.unique(torch.cat([chosen, draw]))
    return chosen.to(device)


def _pick_dormant(flat: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """``k`` distinct positions drawn uniformly among the dormant entries (``flat <= 0``) of a
    1-D CPU tensor.  Uses rejection sampling (no scan of the dormant set) when dormant
    entries are plentiful; the procedure is symmetric in the dormant positions, so the
    k-subset is exactly uniform."""
    n = flat.numel()
    dormant = flat <= 0
    n_dormant = int(dormant.sum())
    if k > n_dormant:
        raise RuntimeError(f"cannot re-activate {k} connections: only {n_dormant} dormant")
    if 4 * n_dormant < n or 4 * k > n_dormant:
        pool = torch.nonzero(dormant).squeeze(1)
        return pool[_sample(pool.numel(), k, generator, "cpu")]
    chosen = torch.empty(0, dtype=torch.long)
    while chosen.numel() < k:
        draw = torch.randint(0, n, (k - chosen.numel(),), generator=generator)
        chosen = torch.unique(torch.cat([chosen, draw[dormant[draw]]]))
    return chosen


def _set_flat(p: Tensor, index: Tensor, values) -> None:
    """``p.flatten()[index] = values`` in place, for any memory format (e.g. channels_last)."""
    if index.numel():
        p[torch.unravel_index(index.to(p.device), p.shape)] = values


def _split(index: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Split flat indices into the concatenation of tensors of ``sizes`` into per-tensor indices."""
    out, start = [], 0
    for size in sizes:
        out.append(index[(index >= start) & (index < start + size)] - start)
        start += size
    return out


def _check_common(lr: float, l1: float, temp: float) -> None:
    if lr < 0:
        raise ValueError(f"invalid learning rate {lr}")
    if l1 < 0:
        raise ValueError(f"invalid L1 coefficient {l1}")
    if temp < 0:
        raise ValueError(f"invalid temperature {temp}")


_warned_zero_reset = False


def _check_reset_val(reset_val: float) -> None:
    """``reset_val`` must be ≥ 0; 0 (DeepRewire's default) is accepted with a warning, once per process."""
    global _warned_zero_reset
    if reset_val < 0:
        raise ValueError(f"reset_val must be ≥ 0 (θ ≤ 0 is dormant), got {reset_val}")
    if reset_val == 0 and not _warned_zero_reset:
        _warned_zero_reset = True
        warnings.warn("DEEPR: reset_val=0 would leave re-activated connections dormant (θ ≤ 0 is "
                      "inactive); using the smallest positive value of the parameter's dtype instead",
                      UserWarning, stacklevel=3)


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


class DEEPR(torch.optim.Optimizer):
    """DEEPR: rewiring SGD with a hard budget of exactly ``nc`` active connections.

    One step, for each rewireable tensor θ (SPEC §8.4):

    1. on active entries only (θ > 0): θ ← θ − lr·(∂E/∂θ + l1) + √(2·lr·temp)·N(0, 1);
       dormant entries (θ ≤ 0) get no gradient, L1 or noise;
    2. re-activate nc − #active uniformly drawn dormant entries at θ = ``reset_val``;
    3. check #(θ > 0) == nc (a ``RuntimeError`` otherwise).

    Args:
        params: rewireable tensors (from :func:`convert_to_deep_rewireable`) or parameter
            groups; a group with ``rewire=False`` gets plain SGD at its lr instead.
        nc: number of active connections: an int (``scope="global"``: over all rewireable
            tensors; ``"layer"``: split by size with :func:`layer_budgets`) or, with
            ``scope="layer"``, one int per rewireable tensor.
        lr: learning rate (schedulers may change ``group["lr"]``; temp stays fixed).
        l1: L1 coefficient on active θ.
        reset_val: value of re-activated entries, ≥ 0.  0 (DeepRewire's default) is
            replaced by the smallest positive normal value of each parameter's dtype
            (``torch.finfo(dtype).tiny``), with a warning once per process: a re-activated
            entry at exactly 0 would count as dormant and the budget would not hold.
        temp: temperature; default lr/210 (DeepRewire). Bellec's ``gdnoise``: temp = lr·gdnoise²/2.
        scope: ``"global"`` (one budget, DeepRewire) or ``"layer"`` (per tensor, Bellec).
        generator: RNG for noise and re-activation; default torch's global RNG.

    At construction a tensor set with a different active count is adjusted to the
    budget: surplus active entries (uniformly drawn) become dormant (θ ← −θ), and
    missing ones are activated at max(|θ|, reset_val).  ``n_parameters`` is the number of
    rewireable entries (DeepRewire's attribute).

    Example::

        >>> rewireable, other = convert(nn.Linear(20, 10, bias=False))
        >>> opt = DEEPR(rewireable, nc=50, lr=0.05, l1=1e-4)
        >>> int((rewireable[0] > 0).sum())
        50
    """

    def __init__(self, params, nc: int | Sequence[int], lr: float = 0.05, l1: float = 1e-4,
                 reset_val: float = 1e-12, temp: float | None = None, scope: str = "global",
                 generator: torch.Generator | None = None):
        if temp is None:
            temp = lr / 210
        _check_common(lr, l1, temp)
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        defaults = dict(lr=lr, l1=l1, temp=temp, reset_val=reset_val, rewire=True)
        super().__init__(params, defaults)
        for group in self.param_groups:     # per-group values too, not only the default
            _check_reset_val(group["reset_val"])
        self.scope = scope
        self.generator = generator
        tensors = self._rewire_tensors()
        sizes = [p.numel() for p in tensors]
        n_total = sum(sizes)
        self.n_parameters = n_total
        if isinstance(nc, (list, tuple)):
            if scope != "layer" or len(nc) != len(tensors):
                raise ValueError("a per-tensor nc needs scope='layer' and one count per rewireable tensor")
            budgets = [int(k) for k in nc]
            if any(not 0 <= k <= s for k, s in zip(budgets, sizes)):
                raise ValueError(f"per-tensor nc {budgets} out of range for sizes {sizes}")
        else:
            if isinstance(nc, bool) or int(nc) != nc or not 0 <= nc <= n_total:
                raise ValueError(f"nc must be an integer in [0, {n_total}], got {nc}")
            nc = int(nc)
            budgets = [nc] if scope == "global" else layer_budgets(nc, sizes)
        self.nc = sum(budgets)
        self.budgets = budgets
        self.last_reactivated = 0
        self._adjust_initial(tensors)
        self._check(tensors)

    # helpers
    def _rewire_tensors(self) -> list[Tensor]:
        return [p for g in self.param_groups if g["rewire"] for p in g["params"]]

    def _units(self, tensors: list[Tensor]) -> list[tuple[list[Tensor], int]]:
        """(tensors, budget) pairs: one for global scope, one per tensor for layer scope."""
        if self.scope == "global":
            return [(tensors, self.budgets[0])]
        return [([p], k) for p, k in zip(tensors, self.budgets)]

    def _reset_value(self, p: Tensor) -> float:
        """The group's reset_val, or the dtype's smallest positive value for 0 (see the class doc)."""
        for g in self.param_groups:
            if any(q is p for q in g["params"]):
                return g["reset_val"] if g["reset_val"] > 0 else torch.finfo(p.dtype).tiny
        raise KeyError("tensor not in optimizer")

    @torch.no_grad()
    def _adjust_initial(self, tensors: list[Tensor]) -> None:
        for unit, budget in self._units(tensors):
            flat = torch.cat([p.detach().reshape(-1).cpu() for p in unit])
            n_active = int((flat > 0).sum())
            if n_active == budget:
                continue
            if n_active < budget:      # activate missing ones at max(|θ|, reset_val)
                pick = _pick_dormant(flat, budget - n_active, self.generator)
            else:                      # deactivate surplus ones: θ ← −θ
                pick = _pick_dormant(torch.where(flat > 0, -1.0, 1.0), n_active - budget, self.generator)
            for p, sel in zip(unit, _split(pick, [q.numel() for q in unit])):
                values = p.detach().reshape(-1)[sel.to(p.device)]
                if n_active < budget:
                    values = values.abs().clamp(min=self._reset_value(p))
                else:
                    values = -values
                _set_flat(p, sel, values)

    def _check(self, tensors: list[Tensor]) -> None:
        for unit, budget in self._units(tensors):
            n = sum(int((p > 0).sum()) for p in unit)
            if n != budget:
                raise RuntimeError(f"DEEPR invariant broken: {n} active connections, expected {budget}")

    def connectivity(self) -> float:
        """Fraction of rewireable entries that are active."""
        tensors = self._rewire_tensors()
        total = sum(p.numel() for p in tensors)
        return sum(int((p > 0).sum()) for p in tensors) / max(total, 1)

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr = group["lr"]
            if not group["rewire"]:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-lr)
                continue
            l1, std = group["l1"], math.sqrt(2 * lr * group["temp"])
            for p in group["params"]:
                active = p > 0
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                update = (grad + l1) * (-lr)
                if std > 0:            # noise drawn for the active entries only
                    n_active = int(active.sum())
                    noise = torch.zeros_like(p).masked_scatter_(
                        active, _noise(p.new_empty(n_active), std, self.generator))
                    update = update + noise
                p.add_(torch.where(active, update, torch.zeros((), dtype=p.dtype, device=p.device)))
        tensors = self._rewire_tensors()
        self.last_reactivated = 0
        for unit, budget in self._units(tensors):
            flat = torch.cat([p.detach().reshape(-1).cpu() for p in unit])
            missing = budget - int((flat > 0).sum())
            if missing < 0:
                raise RuntimeError(f"DEEPR: {budget - missing} active connections exceed the budget {budget}")
            if missing == 0:
                continue
            pick = _pick_dormant(flat, missing, self.generator)
            for p, sel in zip(unit, _split(pick, [q.numel() for q in unit])):
                _set_flat(p, sel, self._reset_value(p))
            self.last_reactivated += missing
        self._check(tensors)
        return loss


class SoftDEEPR(torch.optim.Optimizer):
    """Soft-DEEPR: rewiring SGD without a hard budget.

    One step: θ ← θ − 1[θ>0]·lr·(∂E/∂θ + l1) + √(2·lr·temp)·N(0, 1) on **all** entries,
    then θ ← max(θ, min_weight).  Connectivity (fraction θ > 0) is logged after every
    step in ``connectivity_log`` (and ``last_connectivity``).

    Args:
        params: rewireable tensors or groups (``rewire=False`` groups: plain SGD).
        lr, l1: as for :class:`DEEPR`.
        temp: default lr·l1²/18.
        min_weight: default −3·l1.
        generator: RNG for the noise; default torch's global RNG.
        log_every_step: keep the per-step connectivity list (one float per step).
    """

    def __init__(self, params, lr: float = 0.05, l1: float = 1e-5, temp: float | None = None,
                 min_weight: float | None = None, generator: torch.Generator | None = None,
                 log_every_step: bool = True):
        temp, min_weight = _soft_defaults(lr, l1, temp, min_weight)
        defaults = dict(lr=lr, l1=l1, temp=temp, min_weight=min_weight, rewire=True)
        super().__init__(params, defaults)
        self.generator = generator
        self.log_every_step = log_every_step
        self.connectivity_log: list[float] = []
        self.last_connectivity = self.connectivity()

    def connectivity(self) -> float:
        tensors = [p for g in self.param_groups if g["rewire"] for p in g["params"]]
        total = sum(p.numel() for p in tensors)
        return sum(int((p > 0).sum()) for p in tensors) / max(total, 1)

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr = group["lr"]
            if not group["rewire"]:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-lr)
                continue
            l1, std = group["l1"], math.sqrt(2 * lr * group["temp"])
            for p in group["params"]:
                active = p > 0
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                update = torch.where(active, (grad + l1) * (-lr),
                                     torch.zeros((), dtype=p.dtype, device=p.device))
                if std > 0:
                    update = update + _noise(p, std, self.generator)
                p.add_(update).clamp_(min=group["min_weight"])
        self.last_connectivity = self.connectivity()
        if self.log_every_step:
            self.connectivity_log.append(self.last_connectivity)
        return loss


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


# --------------------------------------------------------------------------- methods
def _fan_in(weight: Tensor) -> int:
    return int(weight[0].numel()) if weight.dim() > 1 else 1


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
    if init not in INITS:
        raise UserError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    from utils.seeding import generator
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


@register
class DeepRMethod(Method):
    """DEEPR on our grid (SPEC §6): exactly nc = round(d·N) active weights throughout.

    Biases and other non-prunable parameters get plain SGD; the lr, epochs, batch and
    schedule come from the run's TrainConfig (FC protocol: lr 0.1 constant, 25 epochs,
    batch 64), and the lr applies to θ.

    Options: ``l1`` (1e-4), ``temp`` (None -> lr/210), ``reset_val`` (1e-12),
    ``scope`` (``"global"`` or ``"layer"``), ``init`` (``"normal"``: w₀ ~ N(0, 1/fan_in) as in
    Bellec's script and SPEC; ``"scaled"``: N(0, 1/(fan_in·d_layer)), see :func:`init_rewiring`).
    """
    name = "deepr"

    def __init__(self, l1: float = 1e-4, temp: float | None = None, reset_val: float = 1e-12,
                 scope: str = "global", init: str = "normal"):
        if scope not in SCOPES:
            raise UserError(f"unknown scope {scope!r}; choose 'global' or 'layer'")
        if not reset_val > 0:
            raise UserError(f"reset_val must be > 0, got {reset_val}")
        if init not in INITS:
            raise UserError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
        self.l1, self.temp, self.reset_val, self.scope, self.init = l1, temp, reset_val, scope, init

    def check_train(self, train_cfg) -> None:
        _check_plain_sgd(train_cfg, self.name)

    def run(self, model, data, density, train_cfg, *, seed, progress=True):
        from utils.seeding import generator
        from utils.train import Hooks, train
        density = check_density(density)
        self.check_train(train_cfg)
        n_total = sum(raw_weight(m).numel() for m in prunable_layers(model).values())
        nc = kept_count(density, n_total)
        gen = generator(seed, "prune")
        rewireable, other, budgets = init_rewiring(model, nc, seed=seed, scope=self.scope,
                                                   reset_val=self.reset_val, prune_generator=gen,
                                                   init=self.init)
        init_model = reconvert_masked(copy.deepcopy(model))
        temp = self.temp if self.temp is not None else train_cfg.lr / 210
        optimizer = DEEPR(_groups(rewireable, other), nc=nc if self.scope == "global" else budgets,
                          lr=train_cfg.lr, l1=self.l1, reset_val=self.reset_val, temp=temp,
                          scope=self.scope, generator=gen)
        history = train(model, data, train_cfg, seed=seed, optimizer=optimizer,
                        hooks=Hooks(columns=_connectivity_columns), progress=progress, desc=self.name)
        extras = _signs_extras(model)
        reconvert_masked(model)
        info = {"nc": nc, "scope": self.scope, "budgets": budgets, "l1": self.l1, "temp": temp,
                "reset_val": self.reset_val, "lr": train_cfg.lr, "init": INIT_LABELS[self.init],
                "biases": "plain SGD, not rewired", "density_achieved": nc / n_total}
        return {self.name: MethodResult(model, init_model, history, extras, info=info)}


@register
class SoftDeepRMethod(Method):
    """Soft-DEEPR on our grid: starts with exactly round(d·N) active weights (as DEEPR)
    and ends at whatever connectivity the sampler reaches (``info["density_achieved"]``).

    Options: ``l1`` (1e-5), ``temp`` (None -> lr·l1²/18), ``min_weight`` (None -> −3·l1),
    ``init_density`` (None -> the run's density), ``init`` (as for ``deepr``).
    """
    name = "soft-deepr"

    def __init__(self, l1: float = 1e-5, temp: float | None = None, min_weight: float | None = None,
                 init_density: float | None = None, init: str = "normal"):
        if init not in INITS:
            raise UserError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
        self.l1, self.temp, self.min_weight, self.init_density = l1, temp, min_weight, init_density
        self.init = init

    def check_train(self, train_cfg) -> None:
        _check_plain_sgd(train_cfg, self.name)

    def run(self, model, data, density, train_cfg, *, seed, progress=True):
        from utils.seeding import generator
        from utils.train import Hooks, train
        density = check_density(density)
        start_density = check_density(self.init_density) if self.init_density is not None else density
        self.check_train(train_cfg)
        n_total = sum(raw_weight(m).numel() for m in prunable_layers(model).values())
        n0 = kept_count(start_density, n_total)
        gen = generator(seed, "prune")
        rewireable, other, _ = init_rewiring(model, n0, seed=seed, prune_generator=gen, init=self.init)
        init_model = reconvert_masked(copy.deepcopy(model))
        temp = self.temp if self.temp is not None else train_cfg.lr * self.l1 ** 2 / 18
        min_weight = self.min_weight if self.min_weight is not None else -3 * self.l1
        optimizer = SoftDEEPR(_groups(rewireable, other), lr=train_cfg.lr, l1=self.l1, temp=temp,
                              min_weight=min_weight, generator=gen)
        history = train(model, data, train_cfg, seed=seed, optimizer=optimizer,
                        hooks=Hooks(columns=_connectivity_columns), progress=progress, desc=self.name)
        extras = _signs_extras(model)
        achieved = _connectivity_columns(model)["connectivity"]
        reconvert_masked(model)
        info = {"initial_active": n0, "density_initial": n0 / n_total, "density_target": density,
                "density_achieved": achieved,
                "connectivity_min": min(optimizer.connectivity_log, default=achieved),
                "connectivity_max": max(optimizer.connectivity_log, default=achieved), "l1": self.l1, "temp": temp,
                "min_weight": min_weight,
                "lr": train_cfg.lr, "init": INIT_LABELS[self.init], "biases": "plain SGD, not rewired"}
        return {self.name: MethodResult(model, init_model, history, extras, info=info)}
