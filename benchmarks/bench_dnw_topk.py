"""DNW's per-step top-k selection: ``topk_rows`` (a ``torch.topk`` per row) vs ``BandedTopK``.

    .venv/bin/python benchmarks/bench_dnw_topk.py --data-dir data           # ~2 min

Two rows per selector, measured in one run, one thread:

* ``select``: ms per call on the FC's first layer stacked for K runs, ``(K, 784, 100)`` |w|,
  along a random walk of |w| (each call after a small step, as between SGD steps);
* ``DNW epoch``: images/s of ``train_batched`` on K DNW runs (FC, thesis recipe: SGD lr 0.1,
  batch 64) over ``--images`` MNIST training images, median of ``--repeats`` epochs.

Both selectors give the same masks (``tests/test_dnw.py``), so both epochs train the same runs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import build, load_data, machine_line, use_threads


class PlainSelector:
    """``topk_rows`` behind :class:`pruners.dnw.BandedTopK`'s interface (the selection before it)."""

    def __init__(self, ks):
        self.ks = ks

    def __call__(self, scores, transposed=False):
        from pruners.dnw import topk_rows
        weights = scores.transpose(-1, -2)
        return topk_rows(weights.reshape(len(self.ks), -1), self.ks).view(weights.shape).transpose(-1, -2)


def time_select(selector, k: int, density: float, calls: int) -> float:
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


def dnw_epochs(data, k: int, density: float, repeats: int) -> float:
    from pruners import get_method
    from utils.engine.batched import train_batched
    from utils.engine.train import TrainConfig
    method = get_method("dnw")
    models, topk = [], []
    for seed in range(21, 21 + k):
        model = build("fc", sparse=False, seed=seed)
        _, entry = method.start_batched(model, density, seed=seed, data_shape=(1, 28, 28))
        models.append(model)
        topk.append(entry["topk"])
    cfg = TrainConfig(epochs=repeats + 1, batch_size=64, lr=0.1, momentum=0.0)
    histories = train_batched(models, data, cfg, seeds=list(range(21, 21 + k)), topk=topk, progress=False)
    seconds = statistics.median(histories[0]["seconds"].iloc[2:]) * k   # the group's epoch time
    return len(data.train_y) * k / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir")
    p.add_argument("--runs", type=int, default=8, help="K runs stacked (default 8, the sweep's)")
    p.add_argument("--density", type=float, default=0.02)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args()
    use_threads(1)
    print(machine_line(1))
    from utils.engine import batched
    data, kind = load_data("mnist", args.data_dir, args.images, 2000)
    banded = batched.BandedTopK
    rows = {}
    for name, selector in (("topk_rows", PlainSelector), ("BandedTopK", banded)):
        rows[name] = [time_select(selector, args.runs, args.density, args.calls)]
        batched.BandedTopK = selector                    # the selector StackedFC builds per layer
        try:
            rows[name].append(dnw_epochs(data, args.runs, args.density, args.repeats))
        finally:
            batched.BandedTopK = banded
    print(f"K = {args.runs} runs, density {args.density:g}, {args.images} {kind} MNIST images per epoch")
    print("| selector | select ms | DNW epoch img/s | × topk_rows |")
    print("|---|---:|---:|---:|")
    for name, (ms, speed) in rows.items():
        print(f"| {name} | {ms:.2f} | {speed:,.0f} | {speed / rows['topk_rows'][1]:.2f} |")


if __name__ == "__main__":
    main()
