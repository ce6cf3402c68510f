"""Runs store and runner.

The on-disk store (``results``), configs and sweeps (``experiment``), run claims, the submitit
launcher, the thesis import (``thesis``) and the run-by-run comparison (``thesis_compare``).
"""
