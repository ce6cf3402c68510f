"""Weight memory and forward latency of masked networks, dense against CSR (:mod:`utils.toolkits.sparse`).

>>> table = inference_table({("synflow", "2%"): model}, batches=(1, 256))
>>> inference_summary(table)
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .sparse import convert_model, latency_ms, memory_report, plain_dense


def inference_table(models: Mapping[tuple, nn.Module], batches: Sequence[int] = (1, 256),
                    repeats: int = 5, input_shape=(1, 28, 28), budget_s: float = 1.0,
                    rounds: int = 3) -> pd.DataFrame:
    """Weight memory and forward latency of each model, dense vs CSR.

    ``models`` maps ``(method, density_label)`` to a masked model.  For each, the plain
    dense copy and ``utils.toolkits.sparse.convert_model(model, nn.Linear, "csr")`` are timed
    (median of ``repeats`` after a warm-up; the smallest median of ``rounds`` interleaved
    dense/CSR rounds, which filters the spikes of a busy machine) at every batch size; memory comes from
    :func:`utils.toolkits.sparse.memory_report` (weights only).  Columns: method, density (label),
    density_achieved, batch, dense_kB, masked_kB, csr_kB, dense_ms, csr_ms, csr_vs_dense,
    max_abs_diff (CSR vs dense outputs).
    """
    rows = []
    for (method, label), model in models.items():
        model = model.eval()
        mem = memory_report(model).iloc[-1]
        dense, csr = plain_dense(model).eval(), convert_model(model, nn.Linear, "csr").eval()
        for b in batches:
            x = torch.randn(b, *input_shape, generator=torch.Generator().manual_seed(1))
            with torch.inference_mode():
                err = (csr(x) - dense(x)).abs().max().item()
            t_dense, t_csr = math.inf, math.inf
            for _ in range(rounds):
                t_dense = min(t_dense, latency_ms(dense, x, repeats, budget_s))
                t_csr = min(t_csr, latency_ms(csr, x, repeats, budget_s))
            rows.append(dict(method=method, density=label, density_achieved=float(mem["density"]),
                             batch=b, dense_kB=mem["dense_bytes"] / 1e3,
                             masked_kB=mem["masked_bytes"] / 1e3, csr_kB=mem["csr_bytes"] / 1e3,
                             dense_ms=t_dense, csr_ms=t_csr, csr_vs_dense=t_csr / t_dense,
                             max_abs_diff=err))
    return pd.DataFrame(rows)


def inference_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per :func:`density_bin` (achieved density, %; mean over its networks): weight kB
    dense/masked/CSR, CSR/dense memory ratio, and per batch size dense and CSR ms and
    their ratio (``csr_vs_dense``, mean of the per-network ratios)."""
    t = table.assign(density=density_bin(table["density_achieved"]))
    mem = t[t["batch"] == t["batch"].min()].groupby("density")[["dense_kB", "masked_kB", "csr_kB"]].mean()
    mem["csr/dense mem"] = mem["csr_kB"] / mem["dense_kB"]
    lat = t.groupby(["density", "batch"])[["dense_ms", "csr_ms", "csr_vs_dense"]].mean().unstack("batch")
    lat.columns = [f"{c} b{b}" for c, b in lat.columns]
    out = mem.join(lat)
    out["networks"] = t[t["batch"] == t["batch"].min()].groupby("density").size()
    out.index.name = "density % (achieved, binned)"
    return out.round(3)


def density_bin(achieved, grid: Sequence[float] = (1, 2, 5, 10, 20, 50, 100)) -> np.ndarray:
    """Nearest grid density (%, in log space) of each achieved density (fraction): groups
    networks of about the same size whatever their label (Gem-Miner's effective density
    can be far below its target)."""
    logs = np.log(np.asarray(grid, dtype=float))
    a = np.log(100 * np.atleast_1d(np.asarray(achieved, dtype=float)))
    return np.asarray(grid, dtype=float)[np.abs(a[:, None] - logs[None, :]).argmin(1)]

