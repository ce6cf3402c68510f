"""One function per method, all with the same call shape::

    pruners.synflow(model, density=0.05)                 # prune-at-init: prunes in place
    model, history = pruners.gem_miner(model, density=0.05, data="mnist", epochs=2)

Prune-at-init methods (``random``, ``magnitude``, ``synflow``, ``random_fc``) set the masks
and return the model; train it afterwards with :func:`utils.train`.  Methods whose mask
is found by training (``gem_miner``, ``deepr``, ``soft_deepr``, ``dnw``, ``imp``) also train:
they take ``data`` and ``epochs`` and return the trained model and its history.
``density`` is always a fraction in (0, 1].  Extra keyword arguments are the method's
options (see ``pruners/README.md``).
"""
from __future__ import annotations

import pandas as pd
from torch import nn

from .base import check_density, get_method


def _data_shape(model: nn.Module, data_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = data_shape or getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("pass data_shape=(C, H, W) for a model without an input_shape attribute")
    return tuple(shape)


def _prune_at_init(name: str):
    def prune(model: nn.Module, density: float, *, data_shape: tuple[int, ...] | None = None,
              seed: int = 0, **options) -> nn.Module:
        method = get_method(name, **options)
        method.prune(model, check_density(density), seed=seed, data_shape=_data_shape(model, data_shape))
        return model
    prune.__name__ = prune.__qualname__ = name.replace("-", "_")
    prune.__doc__ = (f"Prune ``model`` in place with {name} to keep ``density`` (fraction) of its "
                     f"prunable weights.\n\n    Args:\n        model: a masked model (``models.fc()``, "
                     f"``models.resnet20()``).\n        density: fraction kept, in (0, 1].\n"
                     f"        data_shape: input shape (C, H, W); default ``model.input_shape``.\n"
                     f"        seed: seed of the prune stream (ties, random scores).\n"
                     f"        **options: method options.\n\n    Returns:\n        the same model.")
    return prune


def _trained(name: str):
    def prune_and_train(model: nn.Module, density: float, *, data, epochs: int,
                        data_shape: tuple[int, ...] | None = None, seed: int = 0, data_dir=None,
                        progress: bool = True, train_options: dict | None = None,
                        **options) -> tuple[nn.Module, pd.DataFrame]:
        from utils.api import resolve_data
        from utils.engine.train import TrainConfig
        dataset = resolve_data(data, data_dir)
        cfg = TrainConfig(epochs=epochs, **(train_options or {}))
        outputs = get_method(name, **options).run(model, dataset, check_density(density), cfg, seed=seed,
                                                  progress=progress)
        result = outputs[name]
        return result.model, result.history
    prune_and_train.__name__ = prune_and_train.__qualname__ = name.replace("-", "_")
    prune_and_train.__doc__ = (
        f"Find a mask with {name} by training, then return ``(model, history)``.\n\n    Args:\n"
        f"        model: a masked model.\n        density: fraction kept, in (0, 1].\n"
        f"        data: ``\"mnist\"``, ``\"cifar10\"`` or a ``utils.engine.data.Dataset``.\n"
        f"        epochs: training epochs (per phase for Gem-Miner).\n"
        f"        seed: run seed.  data_dir: dataset directory.\n"
        f"        train_options: ``TrainConfig`` fields (lr, batch_size, ...).\n"
        f"        **options: method options.\n\n    Returns:\n"
        f"        the trained model (plain masks) and its per-epoch history DataFrame.")
    return prune_and_train


random = _prune_at_init("random")
magnitude = _prune_at_init("magnitude")
synflow = _prune_at_init("synflow")
random_fc = _prune_at_init("random-fc")
gem_miner = _trained("gem-miner")
deepr = _trained("deepr")
soft_deepr = _trained("soft-deepr")
dnw = _trained("dnw")
imp = _trained("imp")
