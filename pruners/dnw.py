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

from .base import Method, MethodResult, MethodStyle, check_density, kept_count, register


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
        init_model, _ = self.start_batched(model, density, seed=seed, data_shape=tuple(data.info.shape))
        changed = _MaskChanges(model)
        history = train(model, data, train_cfg, seed=seed, hooks=Hooks(after_epoch=lambda e, m: changed(m)),
                        progress=progress, desc=self.name)
        return self.finish_batched(model, init_model, history)

    # Batched (utils.engine.batched): the stack keeps each run's top-k per layer in every forward.
    def batch_kind(self) -> str:
        return "dnw"

    def start_batched(self, model, density, *, seed, data_shape):
        o = self.options
        install_topk(model, check_density(density), o.scope, o.count)
        topk = [module.parametrizations.weight[0].k(module.weight.numel())
                for module in prunable_layers(model).values()]
        # train_batched calls columns for row 0 too, where train()'s after_epoch gives no entry
        columns = _MaskChanges(model, skip_first=True)
        return freeze_topk(copy.deepcopy(model)), {"topk": topk, "columns": columns}

    def finish_batched(self, model, init_model, history):
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
