"""Models of the thesis, all with the shared mask mechanism attached.

>>> model = models.fc()             # 784-100x5-10 on MNIST
>>> model = models.resnet20()       # option B, CIFAR-10
"""
from __future__ import annotations

from torch import nn

from .fc import FC, fc, random_fc
from .masks import (
    Mask,
    attach_masks,
    density,
    freeze_masks,
    get_masks,
    layer_densities,
    mask_of,
    prunable_layers,
    prunable_parameters,
    raw_weight,
    set_masks,
)
from .resnet import ResNet20, resnet20

MODELS = {"fc": fc, "resnet20": resnet20, "random_fc": random_fc}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name (``fc``, ``resnet20``, ``random_fc``)."""
    if name not in MODELS:
        from utils.errors import UserError
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


def analysis_layers(model: nn.Module) -> list[str]:
    """Names of the analysis layers (SPEC §9): prunable layers except the 1x1 shortcuts.

    FC: 6 layers, ResNet-20: 20 (conv1, 18 block convs, fc).
    """
    return [name for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and ".shortcut" not in name
]


__all__ = ["FC", "ResNet20", "Mask", "fc", "resnet20", "random_fc", "build_model", "MODELS",
           "analysis_layers", "attach_masks", "density", "freeze_masks", "get_masks",
           "layer_densities", "mask_of", "prunable_layers", "prunable_parameters", "raw_weight",
           "set_masks"]
