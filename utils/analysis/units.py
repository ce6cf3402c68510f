"""Masked weights per analysis layer ("units") and mask-level statistics (SPEC §9, §9.1).

A *unit* is one output row (Linear) or filter (Conv2d) of a PyTorch weight shaped
(out, in[, kh, kw]); its input set is the nonzero indices of its flattened row.

Every analysis function that takes ``units`` accepts either a model (its analysis
layers are extracted with :func:`get_units`) or a plain list of numpy arrays (or
tensors) in the same orientation, so hand-made masks can be analysed directly.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from models import analysis_layers, mask_of, prunable_layers, raw_weight

Units = list[np.ndarray]


def _named_modules(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


def get_units(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> Units:
    """Masked weights W⊙mask of every analysis layer, as float64 numpy arrays.

    Args:
        model: an FC (6 analysis layers) or ResNet-20 (20: ``conv1``, 18 block convs,
            ``fc``; 1x1 shortcuts excluded), or any model whose analysis layers are
            given by :func:`models.analysis_layers`.
        masks: optional ``{layer name: bool tensor}`` overriding the effective mask of
            the named layers (e.g. Gem-Miner ``flag`` for the thesis's flag mode; the
            caller supplies the flags). Other layers keep their effective mask.

    Returns:
        One array per analysis layer, PyTorch orientation: Linear (out, in), Conv2d
        (out, in, kh, kw). Pruned entries are exactly 0.
    """
    modules = _named_modules(model)
    masks = dict(masks or {})
    names = analysis_layers(model)
    unknown = set(masks) - set(modules)
    if unknown:
        raise KeyError(f"no layer named {sorted(unknown)}")
    out = []
    for name in names:
        module = modules[name]
        weight = raw_weight(module).detach().to("cpu", torch.float64)
        mask = masks.get(name, mask_of(module)).detach().to("cpu").bool()
        if mask.shape != weight.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight {tuple(weight.shape)}")
        out.append(torch.where(mask, weight, torch.zeros((), dtype=torch.float64)).numpy().copy())
    return out


def as_units(x) -> Units:
    """Normalise ``x`` to a list of numpy arrays.

    ``x`` is a model (→ :func:`get_units`), or a sequence of arrays/tensors, one per
    layer, each (out, in[, kh, kw]). Arrays are returned as numpy (not copied if
    already numpy).
    """
    if isinstance(x, nn.Module):
        return get_units(x)
    if isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError("units must be a model or a list of per-layer arrays, not a single array")
    if not isinstance(x, Sequence) and not hasattr(x, "__iter__"):
        raise TypeError(f"cannot interpret {type(x).__name__} as units")
    return [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in x]


def masked_units(units) -> list[int]:
    """Number of fully empty units (rows/filters with no nonzero weight) per layer.

    Args:
        units: model or list of (out, in[, kh, kw]) arrays (masks or masked weights).

    Returns:
        One int per layer.
    """
    return [int((~np.asarray(u).reshape(u.shape[0], -1).astype(bool).any(axis=1)).sum())
            for u in as_units(units)]


def _leaf_index(model: nn.Module) -> dict[str, int]:
    """Index of each module in the thesis's flattened ``get_children`` list.

    Prunable layers are leaves (their parametrization modules are not descended into).
    """
    index: dict[str, int] = {}
    counter = 0

    def walk(module: nn.Module, prefix: str) -> None:
        nonlocal counter
        children = [(n, c) for n, c in module.named_children() if n != "parametrizations"]
        if not children or isinstance(module, (nn.Linear, nn.Conv2d)):
            index[prefix] = counter
            counter += 1
            return
        for name, child in children:
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(model, "")
    return index


def _thesis_keys(model: nn.Module, names: list[str]) -> list[str]:
    from models.fc import FC
    if isinstance(model, FC):
        # thesis Models/mlp.py: Flatten, then Linear/ReLU pairs -> Linears at 1, 3, 5, ...
        return [f"layer_{2 * i + 1}" for i in range(len(names))]
    leaves = _leaf_index(model)
    return [f"layer_{leaves[n]}" for n in names]


def layer_density(model, masks: Mapping[str, torch.Tensor] | None = None,
                  thesis: bool = False) -> dict[str, float]:
    """Percent of kept weights per layer and overall, from the masks (thesis ``check_sparsity``).

    Args:
        model: a model, or a dict ``{layer name: bool mask}``.
        masks: optional override of some layers' masks (e.g. Gem-Miner flags).
        thesis: reproduce the thesis's ``check_sparsity``: only the analysis layers
            (1x1 shortcuts skipped, also in "overall"), keys ``layer_{module index}``
            in the thesis's flattened module list (FC: layer_1, layer_3, ..., layer_11;
            ResNet-20: layer_0 ... layer_49), values rounded to 3 decimals.

    Returns:
        ``{layer: percent, ..., "overall": percent}`` (percent in [0, 100]). By default
        the layers are all prunable layers by name and "overall" is the density of all
        prunable weights.
    """
    if isinstance(model, nn.Module):
        names = analysis_layers(model) if thesis else list(prunable_layers(model))
        modules = _named_modules(model)
        layer_masks = {n: mask_of(modules[n]).detach().cpu().bool() for n in names}
        for n, m in (masks or {}).items():
            if thesis and n not in layer_masks:
                continue
            layer_masks[n] = torch.as_tensor(m).detach().cpu().bool()
        keys = _thesis_keys(model, names) if thesis else names
    else:
        layer_masks = {n: torch.as_tensor(m).bool() for n, m in dict(model).items()}
        layer_masks.update({n: torch.as_tensor(m).bool() for n, m in (masks or {}).items()})
        names = list(layer_masks)
        keys = [f"layer_{i}" for i in range(len(names))] if thesis else names
    result: dict[str, float] = {}
    kept = total = 0
    for key, name in zip(keys, names):
        m = layer_masks[name]
        k, t = int(m.sum()), m.numel()
        kept += k
        total += t
        result[key] = 100.0 * k / t
    result["overall"] = 100.0 * kept / total if total else float("nan")
    if thesis:
        result = {k: round(v, 3) for k, v in result.items()}
    return result
