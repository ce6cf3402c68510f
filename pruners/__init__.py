"""Pruning methods on one mask format. See pruners/README.md for the table of methods.

Every method is a :class:`~pruners.base.Method` registered by name (``METHODS``), so
configs and ``python -m utils.cli train --method NAME`` select it.
"""
from . import deepr, dnw, gem_miner, magnitude, synflow  # noqa: F401  (register the methods)
from .base import (METHODS, Method, MethodResult, check_density, exponential_schedule, get_method,
                   kept_count, linear_schedule, prune_to, register, select_global)
