"""DNW top-k: the mask is the top-k |w| of each tensor, recomputed in every forward (SPEC §8.5).

Wortsman et al. 2019, ``allenai/dnw`` ``imagenet_sparsity_experiments/image_classification/
sparse_util.py``, class ``ChooseTopEdges``: the forward zeroes the smallest |w| of each
tensor, the backward passes the gradient unchanged to **all** entries (straight-through),
so pruned weights keep learning and can re-enter the top-k at any step.

Ours differs from upstream only in the count and ties: upstream zeroes
int(prune_rate·numel) entries (so keeps numel − ⌊(1−d)·numel⌋) with an unstable sort;
we keep exactly k = round(d·numel), ties at the k-th value broken deterministically
(lower flat index first).  Exact |w| ties are measure-zero for trained float weights.

Densities are fractions in (0, 1].
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from models.masks import freeze_masks, get_masks, prunable_layers, replace_parametrization
from utils.errors import UserError

from .base import Method, MethodResult, check_density, kept_count, register


def topk_mask(weight: Tensor, k: int) -> Tensor:
    """Bool mask of exactly the ``k`` largest |weight| entries; ties at the k-th value go to the
    lower flat index (deterministic).  O(n) via ``topk`` + ``cumsum`` instead of a full sort."""
    flat = weight.detach().abs().reshape(-1)
    n = flat.numel()
    if k <= 0:
        return torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    if k >= n:
        return torch.ones(weight.shape, dtype=torch.bool, device=weight.device)
    kth = torch.topk(flat, k, sorted=False).values.min()  # the k-th largest |w|
    above = flat > kth
    tied = flat == kth
    need = k - int(above.sum())
    mask = above | (tied & (tied.cumsum(0) <= need))
    return mask.view(weight.shape)


class ChooseTopEdges(torch.autograd.Function):
    """``weight * mask`` forward; identity backward to every entry (upstream ``ChooseTopEdges``)."""

    @staticmethod
    def forward(ctx, weight: Tensor, mask: Tensor) -> Tensor:
        return weight * mask

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        return grad_output, None


class TopKMask(nn.Module):
    """Weight parametrization keeping the top-k |w| of its tensor, k = round(density · numel).

    ``current_mask()`` is the live top-k of the current raw weight (it follows optimizer
    steps without a forward).  It needs the raw weight, which the parametrization binds on
    its first forward or via :func:`install_topk`; the reference survives ``deepcopy``,
    ``load_state_dict``, ``.to()`` and ``.double()`` (all keep or remap the same Parameter).
    """

    def __init__(self, density: float, scope: str = "layer"):
        super().__init__()
        if scope != "layer":
            raise UserError(f"TopKMask supports scope='layer' only (upstream DNW is per tensor), got {scope!r}")
        self.density = check_density(density)
        self.scope = scope
        object.__setattr__(self, "_weight", None)  # not registered: it is the ParametrizationList's original

    def bind(self, weight: Tensor) -> TopKMask:
        object.__setattr__(self, "_weight", weight)
        return self

    def k(self, numel: int) -> int:
        return kept_count(self.density, numel)

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
        return f"density={self.density}, scope={self.scope!r}"


def install_topk(model: nn.Module, density: float, scope: str = "layer") -> nn.Module:
    """Give every prunable layer a bound :class:`TopKMask` parametrization. Returns ``model``.

    Any previous mask is dropped (DNW starts dense).  Build optimizers afterwards.
    """
    for module in prunable_layers(model).values():
        param = TopKMask(density, scope)
        replace_parametrization(module, param)
        param.bind(module.parametrizations.weight.original)
    return model


def freeze_topk(model: nn.Module) -> nn.Module:
    """Fix every layer's current top-k mask as a plain :class:`~models.masks.Mask` (pruned raw
    weights are kept, as in ``models.masks.freeze_masks``)."""
    return freeze_masks(model)


@register
class DNW(Method):
    """DNW top-k training (SPEC §8.5): per-tensor top-k |w| in every forward, straight-through
    gradient to all weights, mask frozen (plain :class:`~models.masks.Mask`) after training.

    ``init_model`` is the model at the start with its initial top-k mask frozen.  The history
    gets a ``mask_changed`` column: the fraction of mask bits that flipped during each epoch.
    """
    name = "dnw"

    def __init__(self, scope: str = "layer"):
        if scope != "layer":
            raise UserError(f"DNW supports scope='layer' only, got {scope!r}")
        self.scope = scope

    def run(self, model, data, density, train_cfg, *, seed, progress=True):
        from utils.train import Hooks, train
        install_topk(model, check_density(density), self.scope)
        init_model = freeze_topk(copy.deepcopy(model))
        last = {"masks": get_masks(model)}

        def after_epoch(epoch, m):
            masks = get_masks(m)
            changed = sum(int((masks[n] != last["masks"][n]).sum()) for n in masks)
            total = sum(v.numel() for v in masks.values())
            last["masks"] = masks
            return {"mask_changed": changed / total}

        history = train(model, data, train_cfg, seed=seed, hooks=Hooks(after_epoch=after_epoch),
                        progress=progress, desc=self.name)
        freeze_topk(model)
        return {self.name: MethodResult(model, init_model, history, info={"scope": self.scope})}
