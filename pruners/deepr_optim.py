"""DEEPR's and Soft-DEEPR's optimizers (Bellec et al. 2018, SPEC §8.4), for one run
(:class:`DEEPR`, :class:`SoftDEEPR`) and for K runs stacked in one network
(:class:`StackedDEEPR`, ``utils.engine.batched``); the methods live in :mod:`pruners.deepr`.

Both are plain SGD (no momentum, no weight decay): momentum or Adam would break the
Langevin-sampling interpretation.  Parameter groups may set ``rewire=False`` to be updated by
plain SGD (e.g. biases that are not rewired); they are not counted in the connection budget.
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .base import count_true
from .deepr_compat import _check_common, _closure_loss, _noise, _soft_defaults

SCOPES = ("global", "layer")


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


def _pick_dormant(flat: Tensor, k: int, generator: torch.Generator | None, n_dormant: int | None = None) -> Tensor:
    """``k`` distinct positions drawn uniformly among the dormant entries (``flat <= 0``) of a
    1-D CPU tensor (``n_dormant``: their number, when the caller has counted them).  Uses
    rejection sampling (no scan of the dormant set: each draw looks its entry up) when dormant
    entries are plentiful; the procedure is symmetric in the dormant positions, so the k-subset
    is exactly uniform."""
    n = flat.numel()
    if n_dormant is None:
        n_dormant = int(count_true(flat <= 0))
    if k > n_dormant:
        raise RuntimeError(f"cannot re-activate {k} connections: only {n_dormant} dormant")
    if 4 * n_dormant < n or 4 * k > n_dormant:
        pool = torch.nonzero(flat <= 0).squeeze(1)
        return pool[_sample(pool.numel(), k, generator, "cpu")]
    chosen = torch.empty(0, dtype=torch.long)
    while chosen.numel() < k:
        draw = torch.randint(0, n, (k - chosen.numel(),), generator=generator)
        chosen = torch.unique(torch.cat([chosen, draw[flat[draw] <= 0]]))
    return chosen


def _set_flat(p: Tensor, index: Tensor, values) -> None:
    """``p.flatten()[index] = values`` in place, for any memory format (e.g. channels_last)."""
    if index.numel():
        p[torch.unravel_index(index.to(p.device), p.shape)] = values


def _split(index: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Split flat indices into the concatenation of tensors of ``sizes`` into per-tensor indices
    (each part sorted)."""
    index = index.sort().values
    bounds = torch.tensor(list(itertools.accumulate(sizes)), dtype=index.dtype)
    counts = torch.diff(torch.searchsorted(index, bounds), prepend=torch.zeros(1, dtype=torch.long)).tolist()
    return [part - start for part, start in zip(index.split(counts), itertools.accumulate([0, *sizes]))]


def _check_positive(value: float, p: Tensor) -> None:
    """A re-activated entry must be active (θ > 0): the reset value must not round to 0 in p's dtype."""
    if not bool(torch.tensor(value, dtype=p.dtype) > 0):
        raise ValueError(f"DEEPR reset value {value} rounds to 0 in {p.dtype}: re-activated entries would stay dormant")


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


class DEEPR(torch.optim.Optimizer):
    """DEEPR: rewiring SGD with a hard budget of exactly ``nc`` active connections.

    One step, for each rewireable tensor θ (SPEC §8.4):

    1. on active entries only (θ > 0): θ ← θ − lr·(∂E/∂θ + l1) + √(2·lr·temp)·N(0, 1);
       dormant entries (θ ≤ 0) get no gradient, L1 or noise;
    2. re-activate nc − #active uniformly drawn dormant entries at θ = ``reset_val``;
    3. so exactly nc are active: the picks are distinct dormant entries and the reset value is
       positive in the dtype (checked once, at construction; more than nc active raises).

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
        for p in tensors:
            _check_positive(self._reset_value(p), p)
        self._adjust_initial(tensors)
        self._check(tensors)

    #: :func:`utils.engine.train.train` may checkpoint and resume a run with this optimizer: its
    #: state dict holds the generator and the last re-activation count too
    resumable = True

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["rewiring"] = {"generator": None if self.generator is None else self.generator.get_state(),
                             "last_reactivated": self.last_reactivated}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        rewiring = state_dict.pop("rewiring", None)
        super().load_state_dict(state_dict)
        if rewiring is not None:
            if rewiring["generator"] is not None:
                self.generator.set_state(rewiring["generator"])
            self.last_reactivated = rewiring["last_reactivated"]

    # helpers
    def _rewire_tensors(self) -> list[Tensor]:
        return _rewire_tensors(self.param_groups)

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
        return _connectivity(self._rewire_tensors())

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group, lr, std in _rewiring_groups(self.param_groups):
            for p in group["params"]:
                langevin_step(p, p.grad, lr, group["l1"], std, self._noise)
        tensors = self._rewire_tensors()
        self.last_reactivated = 0
        for unit, budget in self._units(tensors):
            self.last_reactivated += reactivate(unit, budget, self.generator, [self._reset_value(p) for p in unit])
        return loss

    def _noise(self, active: Tensor, p: Tensor, std: float) -> Tensor:
        draws = _noise(p.new_empty(int(count_true(active))), std, self.generator)
        return torch.zeros_like(p).masked_scatter_(active, draws)          # in p's row-major order


def _rewire_tensors(param_groups: Sequence[dict]) -> list[Tensor]:
    """The tensors of the ``rewire`` groups, in order (the budget's and the draws' order)."""
    return [p for g in param_groups if g["rewire"] for p in g["params"]]


def _connectivity(tensors: Sequence[Tensor]) -> float:
    """Fraction of the entries of ``tensors`` that are active (θ > 0)."""
    return sum(int(count_true(p > 0)) for p in tensors) / max(sum(p.numel() for p in tensors), 1)


def _plain_sgd(params: Sequence[Tensor], lr: float) -> None:
    """The ``rewire=False`` groups: θ ← θ − lr·∂E/∂θ."""
    for p in params:
        if p.grad is not None:
            p.add_(p.grad, alpha=-lr)


def _rewiring_groups(param_groups: list[dict]) -> Iterator[tuple[dict, float, float]]:
    """(group, lr, Langevin noise std √(2·lr·temp)) of each group that rewires; the other groups
    get their plain SGD step here, as they come."""
    for group in param_groups:
        lr = group["lr"]
        if not group["rewire"]:
            _plain_sgd(group["params"], lr)
            continue
        yield group, lr, math.sqrt(2 * lr * group["temp"])


@torch.no_grad()
def langevin_step(p: Tensor, grad: Tensor | None, lr: float, l1: float, std: float,
                  noise: Callable[[Tensor, Tensor, float], Tensor] | None) -> None:
    """DEEPR's update of θ in place, on its active entries (θ > 0) only:
    θ ← θ − lr·(∂E/∂θ + l1) + std·N(0, 1).  ``noise(active, p, std)`` returns a tensor of ``p``'s
    shape: the draws at the active entries (in the order the optimizer draws them), 0 elsewhere.
    Example: ``langevin_step(theta, theta.grad, 0.1, 1e-5, 0.0, None)`` (no noise at std 0)."""
    active = p > 0
    # in place where it changes no value: one temporary instead of four on a 627k-entry stack
    update = torch.add(grad if grad is not None else torch.zeros_like(p), l1).mul_(-lr)
    if std > 0:
        update.add_(noise(active, p, std))
    p.add_(update.masked_fill_(~active, 0.0))


@torch.no_grad()
def reactivate(unit: Sequence[Tensor], budget: int, generator: torch.Generator | None,
               reset_values: Sequence[float], n_active: int | None = None) -> int:
    """DEEPR's rewiring of one budget unit (tensors sharing one budget): activate ``budget −
    #active`` uniformly drawn dormant entries of the unit at their tensor's reset value.  Returns
    that number.  ``n_active``: the unit's active count, when the caller has it."""
    if n_active is None:
        n_active = sum(int(count_true(p > 0)) for p in unit)
    missing = budget - n_active
    if missing < 0:
        raise RuntimeError(f"DEEPR: {n_active} active connections exceed the budget {budget}")
    if missing == 0:
        return 0
    flat = torch.cat([p.detach().reshape(-1).cpu() for p in unit])
    pick = _pick_dormant(flat, missing, generator, n_dormant=flat.numel() - n_active)
    # the picks are distinct dormant entries and the reset values positive in their dtypes (checked
    # when the optimizer is built), so exactly ``budget`` are active now: no recount
    for p, sel, reset in zip(unit, _split(pick, [q.numel() for q in unit]), reset_values):
        _set_flat(p, sel, reset)
    return missing


class StackedDEEPR(torch.optim.Optimizer):
    """:class:`DEEPR` for K runs whose tensors are stacked along a leading run dimension
    (``utils.engine.batched``): each run is updated and rewired exactly as its own
    :class:`DEEPR` would, with its own generator and budget.

    Args:
        params: groups as for :class:`DEEPR`; rewireable tensors are ``(K, *shape)`` stacks.
        budgets: per run, its budgets (one int for ``scope="global"``, one per tensor for
            ``"layer"``), as :attr:`DEEPR.budgets`.
        generators: per run, its generator (noise, then re-activation, as :class:`DEEPR`'s).
        views: maps a stacked tensor to the ``(K, *shape)`` view whose row-major order is each
            run's own layout, and back (its own inverse, e.g. the transpose of stacked transposed
            weights); default identity.  Updates and counts run on the stacked tensors; the
            noise order and the re-activation draws follow each run's own layout.
        lr, l1, temp, reset_val, scope: shared by the runs, as for :class:`DEEPR`.
    """

    def __init__(self, params, budgets: Sequence[Sequence[int]], generators: Sequence[torch.Generator], *,
                 lr: float, l1: float = 1e-4, temp: float | None = None, reset_val: float = 1e-12,
                 scope: str = "global", views: Callable[[Tensor], Tensor] | None = None):
        if temp is None:
            temp = lr / 210
        _check_common(lr, l1, temp)
        _check_reset_val(reset_val)
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        if len(budgets) != len(generators):
            raise ValueError("StackedDEEPR needs one budget list and one generator per run")
        super().__init__(params, dict(lr=lr, l1=l1, temp=temp, reset_val=reset_val, rewire=True))
        self.scope = scope
        self.budgets = [list(b) for b in budgets]
        self.generators = list(generators)
        self.views = views or (lambda t: t)
        self.last_reactivated = [0] * len(generators)
        # per rewireable tensor its reset value (0 → the dtype's tiny, as DEEPR), fixed for the run
        self.resets = [reset_val if reset_val > 0 else torch.finfo(p.dtype).tiny for p in self._rewire_tensors()]
        for p, reset in zip(self._rewire_tensors(), self.resets):
            _check_positive(reset, p)
        for k, budget in enumerate(self.budgets):
            counts = [int(count_true(p[k] > 0)) for p in self._rewire_tensors()]
            if (sum(counts) if scope == "global" else counts) != (budget[0] if scope == "global" else budget):
                raise RuntimeError(f"DEEPR run {k}: {counts} active connections, budgets {budget}")

    def _rewire_tensors(self) -> list[Tensor]:
        return [self.views(p) for p in _rewire_tensors(self.param_groups)]

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        runs = len(self.generators)
        for group, lr, std in _rewiring_groups(self.param_groups):
            for stacked in group["params"]:
                langevin_step(stacked, stacked.grad, lr, group["l1"], std, self._noise)
        stacks = _rewire_tensors(self.param_groups)
        tensors = [self.views(p) for p in stacks]
        resets = self.resets
        counts = torch.stack([count_true((p > 0).reshape(runs, -1), 1) for p in stacks])   # (tensors, K)
        for k in range(runs):
            if self.scope == "global":
                units = [([p[k] for p in tensors], self.budgets[k][0], resets, int(counts[:, k].sum()))]
            else:
                units = [([p[k]], b, [r], int(c)) for p, b, r, c in zip(tensors, self.budgets[k], resets, counts[:, k])]
            self.last_reactivated[k] = sum(reactivate(unit, budget, self.generators[k], rs, n_active=n)
                                           for unit, budget, rs, n in units)
        return loss

    def _noise(self, active: Tensor, p: Tensor, std: float) -> Tensor:
        """Each run's draws from its own generator, placed at its active entries in its own
        layout's row-major order (as its own :class:`DEEPR`), 0 elsewhere; in ``p``'s layout."""
        own = self.views(active).contiguous()
        counts = count_true(own.view(len(self.generators), -1), 1).tolist()
        draws = torch.cat([_noise(p.new_empty(n), std, g) for n, g in zip(counts, self.generators)])
        return self.views(torch.zeros(own.shape, dtype=p.dtype, device=p.device).masked_scatter_(own, draws))


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
        return _connectivity(_rewire_tensors(self.param_groups))

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group, lr, std in _rewiring_groups(self.param_groups):
            l1 = group["l1"]
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
