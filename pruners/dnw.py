"""DNW top-k: the mask is the top-k |w| of each tensor, recomputed in every forward (SPEC §8.5).

Wortsman et al. 2019, ``allenai/dnw`` ``imagenet_sparsity_experiments/image_classification/
sparse_util.py``, class ``ChooseTopEdges``: the forward zeroes the smallest |w| of each
tensor, the backward passes the gradient unchanged to **all** entries (straight-through),
so pruned weights keep learning and can re-enter the top-k at any step.

Ours differs from upstream only in the count and ties:

* count: upstream zeroes int(prune_rate·n) entries with prune_rate = 1 − d, so keeps
  n − int((1−d)·n) (about ⌈d·n⌉; 5 for n = 5, d = 0.8, as (1−0.8)·5 = 0.99999...).  We keep
  round(d·n) by default (the project's :func:`~pruners.base.kept_count`, as every other
  method); ``count="upstream"`` (``DNW``, ``TopKMask``, ``install_topk``) keeps upstream's.
* ties at the k-th |w|: upstream's ``torch.sort`` is unstable (any tied entry may go); ours
  keep the lower flat index, so masks are reproducible.  Exact |w| ties are measure-zero
  for trained float weights.

Densities are fractions in (0, 1].
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.masks import freeze_masks, get_masks, prunable_layers, replace_parametrization
from utils.errors import UserError

from .base import Method, MethodResult, MethodStyle, check_density, count_true, kept_count, register


def upstream_kept_count(density: float, total: int) -> int:
    """Weights upstream DNW keeps: ``total − int((1 − density)·total)`` (``ChooseTopEdges`` zeroes
    int(prune_rate·numel), prune_rate = 1 − density).  Example: ``upstream_kept_count(0.05, 50) == 3``
    where ``kept_count`` gives round(2.5) = 2."""
    return total - int((1 - density) * total)


#: ``count`` option -> (density, numel) -> number of weights kept per tensor
KEPT_COUNTS = {"round": kept_count, "upstream": upstream_kept_count}


def check_count(count: str) -> str:
    if count not in KEPT_COUNTS:
        raise UserError(f"DNW count must be one of {', '.join(KEPT_COUNTS)}, got {count!r}")
    return count


def topk_rows(flat: Tensor, ks: Sequence[int]) -> Tensor:
    """Bool ``(R, n)``: in row r of ``flat`` (non-negative scores, e.g. |w|) exactly the ``ks[r]``
    largest entries; ties at the k-th value go to the lower index (deterministic).  O(n) per row
    via ``topk`` + ``cumsum`` instead of a full sort; one ``topk`` per distinct count."""
    n = flat.shape[1]
    kth = flat.new_empty(flat.shape[0])
    groups: dict[int, list[int]] = {}
    for row, k in enumerate(ks):
        groups.setdefault(int(k), []).append(row)
    for k, rows in groups.items():
        if k <= 0:
            kth[rows] = math.inf
        elif k >= n:
            kth[rows] = -math.inf
        else:
            sub = flat if len(rows) == flat.shape[0] else flat[rows]
            kth[rows] = torch.topk(sub, k, dim=1, sorted=False).values.min(dim=1).values
    above = flat > kth[:, None]
    tied = flat == kth[:, None]
    need = torch.tensor(list(ks), device=flat.device) - above.sum(1)
    return above | (tied & (tied.cumsum(1) <= need[:, None]))


class BandedTopK:
    """Exact per-row top-k masks of scores that change a little between calls (DNW's |w| from one
    SGD step to the next): the same masks as :func:`topk_rows`, found without a ``topk`` over
    each row.

    The k-th largest value of a row moves little per step, so each call counts the entries
    against a band ``[t·(1 − width), t·(1 + width)]`` around the row's last k-th value t; when
    the band holds the new k-th value (the count above it is < k and the count from its low
    end is ≥ k), that value is the right rank among the few entries inside the band, sorted.
    Rows whose k-th value left the band (and the first call) use ``torch.topk``; a miss doubles
    the row's width, a band holding more than ``max_band`` entries halves it.  A row whose mask
    needs a tie-break at the k-th value goes through :func:`topk_rows`, so ties go to the lower
    index exactly as there.

    On ``(8, 78400)`` rows this is ≈4× faster than :func:`topk_rows` (``benchmarks/README.md``).

    Example::

        >>> select = BandedTopK([2, 1])
        >>> select(torch.tensor([[0.1, 0.5, 0.3], [0.2, 0.1, 0.0]])).tolist()
        [[False, True, True], [True, False, False]]
    """

    def __init__(self, ks: Sequence[int], width: float = 0.01, max_band: int = 4096):
        self.ks = [int(k) for k in ks]
        self.width0 = float(width)
        self.max_band = int(max_band)
        self.kth: Tensor | None = None
        self.width: Tensor | None = None
        self.misses = 0                   # rows that needed a full topk (tests, benchmarks)

    @torch.no_grad()
    def __call__(self, scores: Tensor, transposed: bool = False) -> Tensor:
        """Bool masks of ``scores`` (non-negative, ``(R, ...)``, one row per leading index), in its
        shape.  ``transposed``: ``scores`` is ``(R, in, out)``, the transpose of ``(out, in)``
        weights whose flat index breaks ties (as :func:`topk_rows` on the weights' layout)."""
        rows = scores.shape[0]
        flat = scores.reshape(rows, -1)
        kth, exact = self._kth(flat)
        if exact:                          # no row needs a tie-break: the mask is one comparison
            return (flat >= kth[:, None]).view(scores.shape)
        if not transposed:
            return topk_rows(flat, self.ks).view(scores.shape)
        weights = scores.transpose(-1, -2)
        return topk_rows(weights.reshape(rows, -1), self.ks).view(weights.shape).transpose(-1, -2)

    def _kth(self, flat: Tensor) -> tuple[Tensor, bool]:
        """Each row's k-th largest value (+inf for k = 0, −inf for k = n), and whether exactly k
        entries of every row are ≥ it (no tie straddles the k-th place)."""
        rows, n = flat.shape
        if self.kth is None:             # first call: the per-row constants, once
            self._ks = ks = torch.tensor(self.ks, device=flat.device)
            self._trivial = (ks <= 0) | (ks >= n)
            # NaN compares False: the first call misses in every row but the trivial ones
            self.kth = torch.where(ks <= 0, math.inf, torch.where(ks >= n, -math.inf, math.nan)).to(flat)
            self.width = flat.new_full((rows,), self.width0)
        ks, trivial = self._ks, self._trivial
        kth = self.kth
        ge_lo = flat >= (kth * (1 - self.width))[:, None]
        band = ge_lo & (flat <= (kth * (1 + self.width))[:, None])
        n_lo = count_true(ge_lo, 1)
        counts = count_true(band, 1)
        n_hi = n_lo - counts
        hit = (n_hi < ks) & (n_lo >= ks) & ~trivial
        new = kth.clone()
        # ≥ k entries at or above each row's new k-th value; exactly k unless a tie straddles it
        n_ge = ks.clamp(0, n)
        if bool(hit.any()):
            # a hit row's band holds ≥ k − n_hi ≥ 1 entries: its k-th value is the (k − n_hi)-th of them
            if not bool(hit.all()):
                band &= hit[:, None]
                counts = torch.where(hit, counts, 0)
            values = flat[band]                          # row by row
            row = torch.repeat_interleave(torch.arange(rows, device=flat.device), counts)
            values, by_value = values.sort(descending=True, stable=True)
            row, by_row = row[by_value].sort(stable=True)
            values = values[by_row]                      # grouped by row, descending in each
            starts = counts.cumsum(0) - counts
            at = (starts + ks - n_hi - 1).clamp(0, values.numel() - 1)
            new = torch.where(hit, values[at], new)
            ge_in_band = torch.zeros_like(counts).index_add_(0, row, (values >= new[row]).to(counts.dtype))
            n_ge = torch.where(hit, n_hi + ge_in_band, n_ge)
            self.width = torch.where(hit & (counts > self.max_band), self.width / 2, self.width)
        miss = ~hit & ~trivial
        for r in miss.nonzero().flatten().tolist():
            new[r] = torch.topk(flat[r], self.ks[r], sorted=False).values.min()
            n_ge[r] = int((flat[r] >= new[r]).sum())
        self.misses += int(miss.sum())
        self.width = torch.where(miss & ~kth.isnan(), self.width * 2, self.width)
        self.kth = new
        return new, bool((n_ge == ks.clamp(0, n)).all())


def topk_mask(weight: Tensor, k: int) -> Tensor:
    """Bool mask of exactly the ``k`` largest |weight| entries; ties at the k-th value go to the
    lower flat index (deterministic); :func:`topk_rows` on one row."""
    return topk_rows(weight.detach().abs().reshape(1, -1), [k]).view(weight.shape)


class ChooseTopEdges(torch.autograd.Function):
    """``weight * mask`` forward; identity backward to every entry (upstream ``ChooseTopEdges``)."""

    @staticmethod
    def forward(ctx, weight: Tensor, mask: Tensor) -> Tensor:
        return weight * mask

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        return grad_output, None


class TopKMask(nn.Module):
    """Weight parametrization keeping the top-k |w| of its tensor, k = round(density · numel)
    (``count="round"``) or upstream's numel − int((1 − density) · numel) (``count="upstream"``).

    ``current_mask()`` is the live top-k of the current raw weight (it follows optimizer
    steps without a forward).  It needs the raw weight, which the parametrization binds on
    its first forward or via :func:`install_topk`; the reference survives ``deepcopy``,
    ``load_state_dict``, ``.to()`` and ``.double()`` (all keep or remap the same Parameter).
    """

    def __init__(self, density: float, scope: str = "layer", count: str = "round"):
        super().__init__()
        if scope != "layer":
            raise UserError(f"TopKMask supports scope='layer' only (upstream DNW is per tensor), got {scope!r}")
        self.density = check_density(density)
        self.scope = scope
        self.count = check_count(count)
        object.__setattr__(self, "_weight", None)  # not registered: it is the ParametrizationList's original

    def bind(self, weight: Tensor) -> TopKMask:
        object.__setattr__(self, "_weight", weight)
        return self

    def k(self, numel: int) -> int:
        return KEPT_COUNTS[self.count](self.density, numel)

    def forward(self, weight: Tensor) -> Tensor:
        if self._weight is not weight and isinstance(weight, nn.Parameter):
            self.bind(weight)
        mask = topk_mask(weight, self.k(weight.numel()))
        return ChooseTopEdges.apply(weight, mask)

    def current_mask(self) -> Tensor:
        if self._weight is None:
            raise RuntimeError("TopKMask is not bound to a weight yet: install it with install_topk() "
                               "or run one forward pass")
        return topk_mask(self._weight, self.k(self._weight.numel()))

    def extra_repr(self) -> str:
        return f"density={self.density}, scope={self.scope!r}, count={self.count!r}"


def install_topk(model: nn.Module, density: float, scope: str = "layer", count: str = "round") -> nn.Module:
    """Give every prunable layer a bound :class:`TopKMask` parametrization. Returns ``model``.

    Any previous mask is dropped (DNW starts dense).  Build optimizers afterwards.
    ``count``: ``"round"`` or ``"upstream"`` (see :class:`TopKMask`).
    """
    for module in prunable_layers(model).values():
        param = TopKMask(density, scope, count)
        replace_parametrization(module, param)
        param.bind(module.parametrizations.weight.original)
    return model


def freeze_topk(model: nn.Module) -> nn.Module:
    """Fix every layer's current top-k mask as a plain :class:`~models.masks.Mask` (pruned raw
    weights are kept, as in ``models.masks.freeze_masks``)."""
    return freeze_masks(model)


@dataclass
class DNWOptions:
    """``scope``: ``"layer"`` only (upstream DNW is per tensor); ``count``: ``"round"`` keeps
    round(d·n) per tensor (default), ``"upstream"`` keeps allenai/dnw's n − int((1−d)·n)."""
    scope: str = "layer"
    count: str = "round"

    def __post_init__(self):
        if self.scope != "layer":
            raise UserError(f"DNW supports scope='layer' only, got {self.scope!r}")
        check_count(self.count)


@register
class DNW(Method):
    """DNW top-k training (SPEC §8.5): per-tensor top-k |w| in every forward, straight-through
    gradient to all weights, mask frozen (plain :class:`~models.masks.Mask`) after training.

    ``init_model`` is the model at the start with its initial top-k mask frozen.  The history
    gets a ``mask_changed`` column: the fraction of mask bits that flipped during each epoch.

    Options: :class:`DNWOptions` (config ``methods.dnw``, or ``pruners.dnw(..., count="upstream")``).
    """
    name = "dnw"
    Options = DNWOptions
    style = MethodStyle("DNW", "dnw", "#999933", "*")

    def run(self, model, data, density, train_cfg, *, seed, progress=True):
        from utils.engine.train import Hooks, train
        init_model, _ = self.start_batched(model, density, seed=seed, data_shape=tuple(data.info.shape),
                                           train_cfg=train_cfg)
        changed = _MaskChanges(model)
        history = train(model, data, train_cfg, seed=seed, hooks=Hooks(after_epoch=lambda e, m: changed(m)),
                        progress=progress, desc=self.name)
        return self.finish_batched(model, init_model, history)

    # Batched (utils.engine.batched): the stack keeps each run's top-k per layer in every forward.
    def batch_kind(self) -> str:
        return "dnw"

    def start_batched(self, model, density, *, seed, data_shape, train_cfg=None):
        o = self.options
        install_topk(model, check_density(density), o.scope, o.count)
        topk = [module.parametrizations.weight[0].k(module.weight.numel())
                for module in prunable_layers(model).values()]
        # train_batched calls columns for row 0 too, where train()'s after_epoch gives no entry
        columns = _MaskChanges(model, skip_first=True)
        return freeze_topk(copy.deepcopy(model)), {"topk": topk, "columns": columns}

    def finish_batched(self, model, init_model, history, entry=None):
        o = self.options
        freeze_topk(model)
        return {self.name: MethodResult(model, init_model, history, info={"scope": o.scope, "count": o.count})}


class _MaskChanges:
    """Called after each epoch: ``{"mask_changed": fraction of mask bits flipped since the last call}``."""

    def __init__(self, model: nn.Module, skip_first: bool = False):
        self.last = get_masks(model)
        self.skip = skip_first            # the first call (the log before training) returns {}

    def __call__(self, model: nn.Module) -> dict:
        if self.skip:
            self.skip = False
            return {}
        masks = get_masks(model)
        changed = sum(int((masks[n] != self.last[n]).sum()) for n in masks)
        self.last = masks
        return {"mask_changed": changed / sum(v.numel() for v in masks.values())}
