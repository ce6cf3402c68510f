"""Pruning methods on one mask format. See pruners/README.md for the table of methods.

One function per method, all with the same call shape (``density`` is a fraction)::

    pruners.synflow(model, density=0.05)        # also random, magnitude, random_fc
    model, history = pruners.dnw(model, density=0.05, data="mnist", epochs=2)
                                                # also gem_miner, deepr, soft_deepr, imp

Every method is also a :class:`~pruners.base.Method` registered by name (``METHODS``), so
configs and ``python -m utils.cli train --method NAME`` select it; its options are a dataclass
(``get_method("synflow", levels=10).options``) and its display style is
``method_style("synflow")`` (label, tag, color, marker; also for ``gem-miner-reinit`` and
``gem-miner-shuffle``).
"""
from . import deepr, dnw, gem_miner, magnitude, random, synflow  # noqa: F401  (register the methods)

# The one-call functions take the method names, so ``pruners.synflow`` is the function; the
# implementation modules stay importable as ``from pruners.synflow import SynFlow``.
from .api import deepr, dnw, gem_miner, imp, magnitude, random, random_fc, soft_deepr, synflow  # noqa: E402,F811
from .base import (
                   METHODS,
                   Method,
                   MethodResult,
                   MethodStyle,
                   check_density,
                   exponential_schedule,
                   get_method,
                   kept_count,
                   linear_schedule,
                   method_style,
                   method_styles,
                   prune_on_schedule,
                   prune_to,
                   register,
                   select_global,
)
from .deepr import (
                    DEEPR,
                    NonTrainableParameter,
                    SoftDEEPR,
                    SoftDEEPRWrapper,
                    convert,
                    convert_from_deep_rewireable,
                    convert_to_deep_rewireable,
                    measure_sparsity,
                    reconvert,
)
from .magnitude import prune_by_magnitude

__all__ = ["METHODS", "Method", "MethodResult", "MethodStyle", "get_method", "register", "method_style",
           "method_styles", "select_global", "kept_count", "check_density", "exponential_schedule",
           "linear_schedule", "prune_to", "prune_on_schedule", "prune_by_magnitude",
           "DEEPR", "SoftDEEPR", "convert_to_deep_rewireable", "convert_from_deep_rewireable",
           "convert", "reconvert", "SoftDEEPRWrapper", "NonTrainableParameter", "measure_sparsity",
           "random", "magnitude", "synflow", "random_fc", "gem_miner", "deepr", "soft_deepr", "dnw", "imp"]
