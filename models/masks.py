"""One mask mechanism for every prunable weight.

A prunable layer is an ``nn.Linear`` or ``nn.Conv2d`` whose ``weight`` carries a
``torch.nn.utils.parametrize`` parametrization.  The plain one, :class:`Mask`,
computes ``W * mask`` from a bool buffer shaped like the weight, (out, in[, kh, kw]).
Methods whose mask moves during training (Gem-Miner scores, DNW top-k, DEEPR) use
their own parametrization; every parametrization exposes ``current_mask()`` so the
rest of the library reads one format, and :func:`freeze_masks` turns any of them
back into a plain :class:`Mask`.

State-dict keys are ``<layer>.parametrizations.weight.original`` and
``<layer>.parametrizations.weight.0.mask``.  Masks survive ``state_dict``,
``deepcopy``, ``.to()`` and ``.double()`` (bool buffers are never cast).

Densities in this module are fractions in [0, 1].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)


class Mask(nn.Module):
    """Parametrization ``W -> W * mask`` with a fixed bool ``mask`` buffer."""

    def __init__(self, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().bool())

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask

    def current_mask(self) -> Tensor:
        return self.mask


def is_prunable(module: nn.Module) -> bool:
    """Linear/Conv2d layers, unless marked ``module.prunable = False`` (e.g. Gem-Miner shortcuts)."""
    return isinstance(module, PRUNABLE_TYPES) and getattr(module, "prunable", True)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Prunable layers by qualified name, in registration (state-dict) order."""
    return {name: m for name, m in model.named_modules() if is_prunable(m)}


def prunable_parameters(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` pairs, the convention of ``torch.nn.utils.prune``."""
    return [(m, "weight") for m in prunable_layers(model).values()]


def raw_weight(module: nn.Module) -> Tensor:
    """The trainable tensor behind ``module.weight`` (the unmasked original)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def mask_of(module: nn.Module) -> Tensor:
    """Current effective bool mask of one layer, shaped like its weight."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight[-1].current_mask()
    return torch.ones_like(module.weight, dtype=torch.bool)


def attach_masks(model: nn.Module) -> nn.Module:
    """Give every prunable layer an all-ones :class:`Mask` (idempotent). Returns ``model``.

    Build optimizers after this call: parametrizing moves ``weight`` to
    ``parametrizations.weight.original``.
    """
    for module in prunable_layers(model).values():
        if not parametrize.is_parametrized(module, "weight"):
            parametrize.register_parametrization(
                module, "weight", Mask(torch.ones_like(module.weight, dtype=torch.bool)),
                unsafe=True)
    return model


def replace_parametrization(module: nn.Module, parametrization: nn.Module) -> None:
    """Make ``parametrization`` the layer's only weight parametrization, keeping the original tensor.

    The entry of the existing ``ParametrizationList`` is swapped in place rather than
    removed and re-registered: ``remove_parametrizations`` deletes the ``weight``
    property from the parametrized class, which a ``deepcopy`` shares with the original.
    """
    if not parametrize.is_parametrized(module, "weight"):
        parametrize.register_parametrization(module, "weight", parametrization, unsafe=True)
        return
    plist = module.parametrizations.weight
    plist[0] = parametrization
    while len(plist) > 1:
        del plist[len(plist) - 1]


@torch.no_grad()
def set_masks(model: nn.Module, masks: dict[str, Tensor], zero_pruned: bool = True) -> None:
    """Install fixed masks ``{layer name: bool tensor}`` as plain :class:`Mask` parametrizations.

    Existing :class:`Mask` buffers are updated in place so references held elsewhere
    stay valid.  With ``zero_pruned`` the pruned entries of the original weight are set
    to 0, so weight decay and momentum can never move them.
    """
    layers = prunable_layers(model)
    unknown = set(masks) - set(layers)
    if unknown:
        raise KeyError(f"no prunable layer named {sorted(unknown)}")
    for name, mask in masks.items():
        module = layers[name]
        mask = mask.to(device=raw_weight(module).device, dtype=torch.bool)
        if mask.shape != raw_weight(module).shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, "
                             f"weight has {tuple(raw_weight(module).shape)}")
        current = module.parametrizations.weight[-1] if parametrize.is_parametrized(module, "weight") else None
        if isinstance(current, Mask) and len(module.parametrizations.weight) == 1:
            current.mask.copy_(mask)
        else:
            replace_parametrization(module, Mask(mask))
        if zero_pruned:
            raw_weight(module).mul_(mask)


def get_masks(model: nn.Module) -> dict[str, Tensor]:
    """Effective masks ``{layer name: bool tensor}`` of every prunable layer (clones)."""
    return {name: mask_of(m).detach().clone().bool() for name, m in prunable_layers(model).items()}


def freeze_masks(model: nn.Module) -> nn.Module:
    """Fix whatever mask each layer has now as a plain :class:`Mask` (ends DNW/Gem-Miner/DEEPR training)."""
    set_masks(model, get_masks(model), zero_pruned=False)
    return model


def layer_densities(model: nn.Module) -> dict[str, float]:
    """Fraction of kept weights per prunable layer, from the masks (never ``weight == 0``)."""
    return {name: mask_of(m).float().mean().item() for name, m in prunable_layers(model).items()}


def density(model: nn.Module) -> float:
    """Overall fraction of kept prunable weights (biases and BN are never counted)."""
    kept = total = 0
    for m in prunable_layers(model).values():
        mask = mask_of(m)
        kept += int(mask.sum())
        total += mask.numel()
    return kept / total
