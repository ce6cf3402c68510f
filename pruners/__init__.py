"""Pruning methods on one mask format. See pruners/README.md for the table of methods."""
from .base import (METHODS, Method, MethodResult, check_density, exponential_schedule, get_method,
                   kept_count, linear_schedule, prune_to, register, select_global)
