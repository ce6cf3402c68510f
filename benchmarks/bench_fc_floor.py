"""How far the batched FC training step is from its matmul floor, in fp32 and bf16.

    .venv/bin/python benchmarks/bench_fc_floor.py --data-dir data      # ~1 min, one thread

Where the FC grid's time goes (its target is 15 minutes on 2 cores).  This measures, in one
run on one thread, images per second of

* ``train``        K sparse FC runs (784-100x5-10, 2 %) trained together by
                   :func:`utils.engine.batched.train_batched` at batch 64 (what ``sweep`` does);
* ``matmuls fp32`` the same step's batched matmuls alone: forward of the six layers, the
                   weight gradients of all six and the input gradients of the five upper ones
                   (the first layer's input needs none), at the same shapes, nothing else;
* ``matmuls bf16`` the same matmuls in bfloat16 (AMX / AVX-512 bf16 where the CPU has them);
* ``step eager`` / ``step compiled``: the fixed-mask step written out (gather, forward, loss,
                   backward, masked gradient, SGD) in eager mode and under ``torch.compile``
                   (inductor, which fuses the element-wise work; needs a C++ compiler; its
                   compilation is left out of the timing), to see what fusion would buy.

The ratio ``train / matmuls`` is the share of the training step the matmuls take (the rest is
the batch gather, the element-wise layers, the loss, the masked gradient and the optimizer).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_training import batched_rate  # noqa: E402
from common import CASES, load_data, machine_line  # noqa: E402

WIDTHS = (784, 100, 100, 100, 100, 100, 10)


def matmul_rate(k: int, batch: int, dtype: torch.dtype, steps: int, repeats: int = 5) -> float:
    """img/s of the batched FC step's matmuls alone: ``k`` runs, ``batch`` images each."""
    gen = torch.Generator().manual_seed(0)
    shapes = list(zip(WIDTHS[:-1], WIDTHS[1:]))
    xs = [torch.randn(k, batch, i, generator=gen).to(dtype) for i, _ in shapes]
    ws = [torch.randn(k, i, o, generator=gen).to(dtype) for i, o in shapes]
    gs = [torch.randn(k, batch, o, generator=gen).to(dtype) for _, o in shapes]

    def step():
        for layer, (x, w, g) in enumerate(zip(xs, ws, gs)):
            torch.bmm(x, w)                                  # forward
            torch.bmm(x.transpose(1, 2), g)                  # weight gradient
            if layer:
                torch.bmm(g, w.transpose(1, 2))              # input gradient

    for _ in range(steps // 10):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        times.append(time.perf_counter() - t)
    return k * batch * steps / statistics.median(times)


def step_rate(k: int, batch: int, compiled: bool, steps: int, repeats: int = 5, density: float = 0.02) -> float:
    """img/s of the fixed-mask FC step written out (plain SGD, lr 0.1, as the thesis profile),
    ``k`` runs of ``batch`` images, eager or under ``torch.compile``; compilation not timed."""
    gen = torch.Generator().manual_seed(0)
    shapes = list(zip(WIDTHS[:-1], WIDTHS[1:]))
    masks = [(torch.rand(k, i, o, generator=gen) < density).float() for i, o in shapes]
    weights = [(torch.randn(k, i, o, generator=gen) * m / i ** 0.5).requires_grad_() for (i, o), m in
               zip(shapes, masks)]
    biases = [torch.zeros(k, o).requires_grad_() for _, o in shapes]
    images, labels = torch.randn(10_000, WIDTHS[0], generator=gen), torch.randint(0, 10, (10_000,), generator=gen)

    def losses(x, y):
        for depth, (w, b) in enumerate(zip(weights, biases)):
            x = torch.baddbmm(b.unsqueeze(1), x, w)
            x = torch.relu(x) if depth < len(weights) - 1 else x
        return F.cross_entropy(x.reshape(-1, x.shape[-1]), y.reshape(-1), reduction="none").view(k, -1).mean(1)

    def update():
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.sub_(0.1 * w.grad * m)
            for b in biases:
                b.sub_(0.1 * b.grad)

    forward, sgd = (torch.compile(losses), torch.compile(update)) if compiled else (losses, update)

    def step(i):
        idx = torch.arange(i * k * batch, (i + 1) * k * batch) % len(labels)
        for t in weights + biases:
            t.grad = None
        forward(images[idx].view(k, batch, -1), labels[idx].view(k, batch)).sum().backward()
        sgd()

    for i in range(max(steps // 10, 3)):           # warm-up; compiles on the first calls
        step(i)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(steps):
            step(i)
        times.append(time.perf_counter() - t)
    return k * batch * steps / statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="holding mnist/ (missing: synthetic images)")
    p.add_argument("--runs", type=int, default=8, help="runs per stack, K (sweep's default 8)")
    p.add_argument("--images", type=int, default=20_000, help="training images per epoch")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs after one warm-up")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    print(machine_line(1))
    data, source = load_data(CASES["fc"][0], args.data_dir, args.images, 500)
    train = batched_rate(data, CASES["fc"][1], args.runs, args.repeats)
    fp32 = matmul_rate(args.runs, 64, torch.float32, steps=200)
    bf16 = matmul_rate(args.runs, 64, torch.bfloat16, steps=200)
    eager = step_rate(args.runs, 64, compiled=False, steps=200)
    compiled = step_rate(args.runs, 64, compiled=True, steps=200)
    print(f"K = {args.runs} runs, batch 64, one thread, {source} MNIST images")
    print("| step | img/s | × train |")
    print("|---|---:|---:|")
    for label, rate in (("train (batched, fp32)", train), ("matmuls alone, fp32", fp32),
                        ("matmuls alone, bf16", bf16), ("step written out, eager", eager),
                        ("step written out, torch.compile", compiled)):
        print(f"| {label} | {rate:,.0f} | {rate / train:.2f} |")
    print(f"matmuls' share of the fp32 training step: {train / fp32:.0%}; "
          f"torch.compile on the written-out step: {compiled / eager:.2f}x")


if __name__ == "__main__":
    main()
