"""The compact tensor encoding of a stored network (see :mod:`utils.runs.results` for the layout).

Per prunable layer ``<layer>.mask`` (``np.packbits`` of the flattened bool mask), optionally
``<layer>.support`` and ``<layer>.values`` (float32 at the support positions); every other state
entry dense under its state-dict key.  Method extras: bool and ±1 sign tensors bit-packed.

>>> tensors, shapes = encode_model(model)
>>> decode_into(build_model("fc"), tensors, shapes)      # the same weights and masks
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.masks import mask_of, prunable_layers, raw_weight, set_masks
from utils.errors import RunStoreError


# ----------------------------------------------------------------------------- tensors
def pack_bool(mask: Tensor) -> Tensor:
    """bool tensor -> uint8 ``np.packbits`` of its flattened (C-order) values."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().reshape(-1).astype(bool)))


def unpack_bool(packed: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_bool`."""
    n = math.prod(shape)
    bits = np.unpackbits(packed.numpy(), count=n).astype(bool)
    return torch.from_numpy(bits.reshape(shape))


def _masked_keys(model: nn.Module) -> set[str]:
    return {f"{name}.parametrizations.weight." for name in prunable_layers(model)}


def encode_model(model: nn.Module, support: dict[str, Tensor] | None = None
                 ) -> tuple[dict[str, Tensor], dict[str, list[int]]]:
    """Model -> (compact tensors, shapes). See the module docstring for the format."""
    tensors, shapes = {}, {}
    support = support or {}
    for name, module in prunable_layers(model).items():
        mask = mask_of(module).detach().bool()
        keep = support.get(name, mask).to(mask.device).bool() | mask
        weight = raw_weight(module).detach()
        shapes[name] = list(weight.shape)
        tensors[f"{name}.mask"] = pack_bool(mask)
        if not torch.equal(keep, mask):
            tensors[f"{name}.support"] = pack_bool(keep)
        tensors[f"{name}.values"] = weight[keep].float().cpu().contiguous()
    skip = tuple(_masked_keys(model))
    for key, value in model.state_dict().items():
        if not key.startswith(skip):
            tensors[key] = value.detach().cpu().contiguous()
    return tensors, shapes


@torch.no_grad()
def decode_into(model: nn.Module, tensors: dict[str, Tensor], shapes: dict[str, list[int]]) -> nn.Module:
    """Load compact tensors (from :func:`encode_model`) into a freshly built model."""
    masks = {}
    for name, module in prunable_layers(model).items():
        shape = tuple(shapes[name])
        mask = unpack_bool(tensors[f"{name}.mask"], shape)
        keep = unpack_bool(tensors[f"{name}.support"], shape) if f"{name}.support" in tensors else mask
        weight = torch.zeros(shape, dtype=raw_weight(module).dtype)
        weight[keep] = tensors[f"{name}.values"].to(weight.dtype)
        raw_weight(module).copy_(weight)
        masks[name] = mask
    set_masks(model, masks, zero_pruned=False)
    compact = {f"{name}.{part}" for name in masks for part in ("mask", "support", "values")}
    rest = {k: v for k, v in tensors.items() if k not in compact}
    skip = tuple(_masked_keys(model))
    missing, _ = model.load_state_dict(rest, strict=False)
    missing = [k for k in missing if not k.startswith(skip)]
    if missing:
        raise RunStoreError(f"stored weights lack {missing[:3]}")
    return model


def _is_sign_tensor(value: Tensor) -> bool:
    return value.dtype == torch.int8 and bool((value.abs() == 1).all())


def encode_extras(extras: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Method extras -> (tensors, meta). Bool tensors and int8 ±1 sign tensors are bit-packed.

    ``meta[key]["packed"]`` is ``True`` (bool, 1 bit per entry), ``"sign"`` (int8 ±1,
    bit set = +1) or ``False`` (stored as is).
    """
    tensors, meta = {}, {}
    for key, value in extras.items():
        value = value.detach().cpu()
        if value.dtype == torch.bool:
            tensors[key], packed = pack_bool(value), True
        elif _is_sign_tensor(value):
            tensors[key], packed = pack_bool(value > 0), "sign"
        else:
            tensors[key], packed = value.contiguous(), False
        meta[key] = {"packed": packed, "shape": list(value.shape)}
    return tensors, meta


def decode_extras(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Tensor]:
    """Inverse of :func:`encode_extras`."""
    out = {}
    for key, value in tensors.items():
        packed, shape = meta[key]["packed"], tuple(meta[key]["shape"])
        if packed == "sign":
            out[key] = torch.where(unpack_bool(value, shape), 1, -1).to(torch.int8)
        elif packed:
            out[key] = unpack_bool(value, shape)
        else:
            out[key] = value
    return out
