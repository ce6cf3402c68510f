"""Benchmark of the vectorised analyses against straightforward per-pair Python loops.

    .venv/bin/python benchmarks/bench_analysis.py [--threads N] [--naive-pairs K]

On a loaded machine, threaded BLAS/torch spin for cores they cannot get; ``--threads 1``
shows the single-thread cost (the whole 9x9 FC convergent matrix drops from ~20 s to
~0.5 s at load 10 on 2 cores).

1. NNSTD 9x9 matrix of nine random-masked ResNet-20 networks (densities 5/7.5/10%,
   both directions per pair, residual-stream topology) — target < 10 s.
2. Convergent-learning 9x9 similarity matrix of nine random-masked FC networks on 600
   images (real activations, max matching).

The naive references (below) loop over unit pairs in Python: NED from Python sets,
Pearson from numpy on each pair of activation vectors. Both sides use the same matching
(``linear_sum_assignment``) and propagation rules, so their results must agree; the
script prints the largest difference. The naive side is timed on the first K pairs
(``--naive-pairs``, default 9; 0 = all) and extrapolated linearly (marked with "~").
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None,
                   help="limit BLAS/OpenMP/torch threads (set before numpy/torch are imported)")
    p.add_argument("--naive-pairs", type=int, default=9,
                   help="time the naive references on the first K pairs and extrapolate (0: all pairs)")
    p.add_argument("--images", type=int, default=600, help="images for convergent learning")
    return p.parse_args()


ARGS = parse_args()
if ARGS.threads:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

import models  # noqa: E402
from models import set_masks  # noqa: E402
from utils.analysis import activations, distance_matrix, get_units, similarity_matrix  # noqa: E402
from utils.analysis.matching import _topology, permute_inputs  # noqa: E402

if ARGS.threads:
    torch.set_num_threads(ARGS.threads)


def random_masked(builder, density: float, seed: int):
    torch.manual_seed(seed)
    model = builder()
    g = torch.Generator().manual_seed(1000 + seed)
    set_masks(model, {n: torch.rand(m.weight.shape, generator=g) < density
                      for n, m in models.prunable_layers(model).items()})
    return model


def pairs(n: int, diagonal: bool) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i if diagonal else i + 1, n)]


# ----------------------------------------------------------------------------- naive references

def naive_nnstd_direction(A, B, topo):
    """Greedy layer-by-layer NNSTD, B aligned to A, unit pairs looped in Python."""
    perms, dists = [None] * len(A), []
    for layer, (a, b) in enumerate(zip(A, B)):
        src, leader = topo[layer]
        if src is not None:
            b = permute_inputs(b, perms[src])
        sets_a = [set(np.flatnonzero(u).tolist()) for u in a.reshape(a.shape[0], -1)]
        sets_b = [set(np.flatnonzero(u).tolist()) for u in b.reshape(b.shape[0], -1)]
        cost = np.zeros((len(sets_a), len(sets_b)))
        for i, sa in enumerate(sets_a):
            for j, sb in enumerate(sets_b):
                union = len(sa | sb)
                cost[i, j] = 0.0 if union == 0 else len(sa ^ sb) / union
        if layer == len(A) - 1:
            perm = np.arange(len(sets_a))
        elif leader is not None:
            perm = perms[leader]
        else:
            perm = linear_sum_assignment(cost)[1]
            if np.trace(cost) <= cost[np.arange(len(perm)), perm].sum() + 1e-12:
                perm = np.arange(len(perm))
        perms[layer] = perm
        dists.append(cost[np.arange(len(perm)), perm].mean())
    return float(np.mean(dists))


def naive_nnstd_pair(A, B):
    topo = _topology(A, "auto")
    return 0.5 * (naive_nnstd_direction(A, B, topo) + naive_nnstd_direction(B, A, topo))


def naive_similarity_pair(model_a, model_b, images):
    """Per-pair loop: activations of both nets, Pearson per unit pair, max matching."""
    acts_a, acts_b = activations(model_a, images), activations(model_b, images)
    values = []
    for layer, (xa, xb) in enumerate(zip(acts_a, acts_b)):
        corr = np.zeros((xa.shape[1], xb.shape[1]))
        for i in range(xa.shape[1]):
            for j in range(xb.shape[1]):
                x, y = xa[:, i], xb[:, j]
                sx, sy = x.std(), y.std()
                if x.max() == x.min() or y.max() == y.min():
                    continue
                corr[i, j] = ((x - x.mean()) * (y - y.mean())).mean() / (sx * sy)
        if layer == len(acts_a) - 1:
            order = np.arange(corr.shape[0])
        else:
            order = linear_sum_assignment(corr, maximize=True)[1]
        values.append(corr[np.arange(len(order)), order].mean())
    return float(np.mean(values))


# ----------------------------------------------------------------------------- benchmark

def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_naive(pair_list, fn, limit):
    todo = pair_list if not limit else pair_list[:limit]
    results, seconds = timed(lambda: {p: fn(*p) for p in todo})
    scale = len(pair_list) / len(todo)
    return results, seconds * scale, scale != 1


def main() -> None:
    densities = [0.05, 0.075, 0.10]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"torch threads {torch.get_num_threads()}; BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")

    # ResNet-20 NNSTD
    nets = [random_masked(models.resnet20, densities[k % 3], 21 + k) for k in range(9)]
    units, t_units = timed(lambda: [get_units(m) for m in nets])
    fast, t_fast = timed(lambda: distance_matrix(units, "nnstd"))
    pl = pairs(9, diagonal=False)
    naive, t_naive, extrapolated = run_naive(pl, lambda i, j: naive_nnstd_pair(units[i], units[j]), ARGS.naive_pairs)
    diff_nnstd = max(abs(fast.iloc[i, j] - v) for (i, j), v in naive.items())

    # FC convergent learning
    fcs = [random_masked(models.fc, 0.10, 21 + k) for k in range(9)]
    images = torch.randn(ARGS.images, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    sim, t_sim = timed(lambda: similarity_matrix(fcs, images))
    pl_sim = pairs(9, diagonal=True)
    naive_sim, t_naive_sim, extra_sim = run_naive(
        pl_sim, lambda i, j: naive_similarity_pair(fcs[i], fcs[j], images), ARGS.naive_pairs)
    diff_sim = max(abs(sim.iloc[i, j] - v) for (i, j), v in naive_sim.items())

    rows = [
        ("NNSTD 9x9, ResNet-20 (5-10% random)", t_fast, t_naive, extrapolated, diff_nnstd, len(pl)),
        (f"convergent 9x9, FC, {ARGS.images} images", t_sim, t_naive_sim, extra_sim, diff_sim, len(pl_sim)),
    ]
    print(f"\n{'task':<40} {'pairs':>5} {'vectorised s':>13} {'naive loop s':>13} {'speed-up':>9} {'max |diff|':>11}")
    for name, tf, tn, ex, diff, n in rows:
        mark = "~" if ex else " "
        print(f"{name:<40} {n:>5} {tf:>13.2f} {mark}{tn:>12.2f} {mark}{tn / tf:>8.1f}x {diff:>11.1e}")
    print(f"\nResNet-20 9x9 NNSTD matrix: {t_fast:.2f} s (+ {t_units:.2f} s extracting units); "
          f"target < 10 s: {'met' if t_fast + t_units < 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
