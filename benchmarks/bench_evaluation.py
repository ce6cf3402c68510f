"""Evaluation throughput (img/s) against the evaluation batch size, same process.

    .venv/bin/python benchmarks/bench_evaluation.py --data-dir data              # ~3 min, 1 thread
    .venv/bin/python benchmarks/bench_evaluation.py --data-dir data --quick      # ~30 s
    .venv/bin/python benchmarks/bench_evaluation.py --models resnet20 --batches 32,64,128,1000

Times :func:`utils.engine.train.evaluate`, what every training epoch runs on the test set, as
the training loop calls it (the engine's defaults for the model on this CPU: channels_last for
conv nets, + bf16 autocast where the CPU has native bf16), for FC/MNIST and ResNet-20/CIFAR-10,
dense and sparse (2 %, random global masks).  Per case and batch size: images per second over
``--images`` test images, median of ``--repeats`` passes after one warm-up pass; ``ratio`` is
img/s / img/s at the largest batch size of the run.  The batch size has no effect on results
(a test checks it); on a CPU it decides whether a conv net's activations stay in cache.

One thread by default: ``sweep`` trains in processes of one thread each, and the evaluation
of every epoch runs in them.  Take timings on an idle machine (the header flags a busy one).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import CASES, build, load_data, machine_line, use_threads  # noqa: E402


def eval_throughput(model, data, batch: int, repeats: int) -> float:
    """Median img/s of ``evaluate`` over ``data``'s test images at batch size ``batch``."""
    from utils.engine.train import TrainConfig, evaluate
    from utils.runs.experiment import compute_record
    compute = compute_record(model, TrainConfig(), torch.get_num_threads())     # as a run trains here
    device, bf16, channels_last = compute["device"], compute["bf16"], compute["channels_last"]
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    run = lambda: evaluate(model, data.test_x, data.test_y, data, batch, device, bf16, channels_last)
    run()                                                   # warm-up: allocator, oneDNN primitives
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return len(data.test_y) / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", default="fc,resnet20", help="comma-separated: fc, resnet20")
    parser.add_argument("--batches", default="64,128,256,500,1000",
                        help="comma-separated evaluation batch sizes")
    parser.add_argument("--images", type=int, default=None,
                        help="test images per pass (default: 10000 FC, 4000 ResNet-20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1,000 images, 1 timed pass")
    args = parser.parse_args(argv)
    threads = use_threads(args.threads)
    batches = sorted({int(b) for b in args.batches.split(",")})
    repeats = 1 if args.quick else args.repeats
    print(machine_line(threads))
    print(f"| case | {' | '.join(f'b={b}' for b in batches)} | b={batches[0]} / b={batches[-1]} |")
    print(f"|---|{'---:|' * (len(batches) + 1)}")
    for name in args.models.split(","):
        dataset, _ = CASES[name]
        images = 1000 if args.quick else (args.images or (10_000 if name == "fc" else 4_000))
        data, kind = load_data(dataset, args.data_dir, n_train=1, n_test=images)
        for sparse in (False, True):
            model = build(name, sparse)
            rates = [eval_throughput(model, data, b, repeats) for b in batches]
            label = f"{name} {'2 %' if sparse else 'dense'} ({kind}, {images} images)"
            print(f"| {label} | {' | '.join(f'{r:,.0f}' for r in rates)} | {rates[0] / rates[-1]:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
