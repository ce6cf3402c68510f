"""Per method: K FC runs trained alone one after the other vs together (``execute_batch``).

    .venv/bin/python benchmarks/bench_batched_methods.py --data-dir data             # ~6 min idle
    .venv/bin/python benchmarks/bench_batched_methods.py --methods dnw --runs 8

What the sweep does with a group of FC runs (``utils.runs.experiment.execute`` per run vs
``execute_batch``: pruning or mining, training, evaluation after every epoch, storing), on
``--images`` MNIST training images for ``--epochs`` epochs, thesis profile, one thread, the
two layouts measured in one run.  Runs: densities 2/5/10/20/50 % and seeds 21/42/63 in turn.
Both layouts give the same stored runs (``tests/test_batched.py``).  The DNW top-k selection
alone (``BandedTopK`` vs a ``torch.topk`` per row) is the first table.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

import torch
from common import ROOT, machine_line, use_threads

DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.5)


class PlainSelector:
    """``topk_rows`` behind :class:`pruners.dnw.BandedTopK`'s interface (the selection before it)."""

    def __init__(self, ks):
        self.ks = ks

    def __call__(self, scores, transposed=False):
        from pruners.dnw import topk_rows
        weights = scores.transpose(-1, -2)
        return topk_rows(weights.reshape(len(self.ks), -1), self.ks).view(weights.shape).transpose(-1, -2)


def time_select(selector, k: int, density: float, calls: int) -> float:
    """ms per selection on K runs' first FC layer, ``(K, 784, 100)``, along a random walk of |w|."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(k, 784, 100, generator=g) * 0.05
    select = selector([round(density * 78400)] * k)
    select(w.abs(), transposed=True)                     # warm-up (and the band's first topk)
    seconds = 0.0
    for _ in range(calls):
        w += 1e-4 * torch.randn(w.shape, generator=g)
        start = time.perf_counter()
        select(w.abs(), transposed=True)
        seconds += time.perf_counter() - start
    return 1e3 * seconds / calls


def time_runs(method: str, runs: int, data_dir: str, images: int, epochs: int) -> tuple[float, float]:
    """(seconds alone, seconds batched) for ``runs`` runs of ``method``."""
    from utils.runs.experiment import Overrides, RunSpec, execute, execute_batch, load_config
    config = load_config("fc_mnist")
    cells = list(islice(((d, s) for s in (21, 42, 63) for d in cycle(DENSITIES)), runs))
    specs = [RunSpec("fc_mnist", method, d, s, "thesis") for d, s in cells]
    overrides = Overrides(epochs=epochs, train_subset=images)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for spec in specs:
            execute(spec, config, data_dir=data_dir, root=Path(tmp) / "alone", overrides=overrides, progress=False)
        alone = time.perf_counter() - start
        start = time.perf_counter()
        execute_batch(specs, config, data_dir=data_dir, root=Path(tmp) / "batched", overrides=overrides,
                      progress=False)
        return alone, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(ROOT / "data"))
    p.add_argument("--methods", default="dnw,deepr,gem-miner")
    p.add_argument("--runs", type=int, default=8, help="K runs per group (default 8, the sweep's)")
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args()
    use_threads(1)
    print(machine_line(1))
    from pruners.dnw import BandedTopK
    plain, banded = (time_select(s, args.runs, 0.02, args.calls) for s in (PlainSelector, BandedTopK))
    print(f"\nDNW selection, K = {args.runs} runs × (784, 100), density 2 %: topk per row {plain:.2f} ms, "
          f"BandedTopK {banded:.2f} ms ({plain / banded:.2f}×)\n")
    print(f"K = {args.runs} runs, {args.images} MNIST training images × {args.epochs} epochs (Gem-Miner: "
          f"mining + finetunes of {args.epochs} epochs each), 10k test images after every epoch")
    print("| method | alone s | batched s | × alone |")
    print("|---|---:|---:|---:|")
    for method in args.methods.split(","):
        alone, batched = time_runs(method, args.runs, args.data_dir, args.images, args.epochs)
        print(f"| {method} | {alone:.1f} | {batched:.1f} | {alone / batched:.2f} |", flush=True)


if __name__ == "__main__":
    main()
