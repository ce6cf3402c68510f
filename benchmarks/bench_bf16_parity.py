"""bf16 autocast parity: the same runs trained in fp32 and in bf16 from the same seed.

    .venv/bin/python benchmarks/bench_bf16_parity.py --data-dir /tmp/cifar            # ~6 min idle
    .venv/bin/python benchmarks/bench_bf16_parity.py --data-dir /tmp/cifar --quick    # ~1 min

The engine trains conv nets on CPU in bf16 autocast (fp32 master weights) by default.
This checks it costs no accuracy: each case is trained twice with ``utils.train.train``
(same seed, init, mask, batch order), once with ``bf16=False`` and once with
``bf16=True`` (ResNet: + channels_last, the engine default), and the final test top-1 is
compared (target |Δ| ≤ 0.5 pt).  The bf16 model is also evaluated in fp32 ("fp32 eval").

* FC/MNIST: thesis protocol (SGD lr 0.1, no momentum, batch 64), random mask at
  ``--fc-density`` (default 50 %), 1 epoch on all 60k images, seeds 21/42/63.
* ResNet-20/CIFAR-10: ``cpu`` profile optimiser (SGD 0.9 Nesterov, lr 0.01, wd 5e-4,
  batch 64), random mask at ``--resnet-density`` (default 10 %), 1 epoch on the first
  ``--resnet-images`` (default 10,000) images, seed 21 (``--resnet-seeds``).

One early epoch is a short, chaotic budget: two runs whose arithmetic differs in the last
bits drift apart, so a single pair's gap mixes precision bias with trajectory noise.  The
mean over seeds is the number to judge; ``--epochs`` lengthens the budget.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_training import load_data  # noqa: E402

OPT = {"fc": dict(lr=0.1, momentum=0.0, weight_decay=0.0),
       "resnet20": dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)}


def train_once(model_name: str, data, density: float, seed: int, bf16: bool, epochs: int) -> dict:
    from models import build_model
    from pruners import get_method
    from utils.seeding import seed_init
    from utils.train import TrainConfig, evaluate, train
    seed_init(seed)
    model = build_model(model_name)
    if density < 1:
        get_method("random").prune(model, density, seed=seed, data_shape=tuple(data.info.shape))
    conv = model_name != "fc"
    cfg = TrainConfig(epochs=epochs, batch_size=64, bf16=bf16, channels_last=bf16 and conv, **OPT[model_name])
    start = time.perf_counter()
    history = train(model, data, cfg, seed=seed, log_initial=False, progress=False)
    fp32_eval = evaluate(model, data.test_x, data.test_y, data, 1000, "cpu", bf16=False)["top1"]
    return {"top1": float(history["top1"].iloc[-1]), "top1_fp32_eval": fp32_eval,
            "train_loss": float(history["train_loss"].iloc[-1]), "seconds": time.perf_counter() - start}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="directory with mnist/ and cifar-10-batches-py/")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--fc-density", type=float, default=50.0, help="%% remaining")
    p.add_argument("--resnet-density", type=float, default=10.0, help="%% remaining")
    p.add_argument("--fc-seeds", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--resnet-seeds", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--fc-images", type=int, default=None, help="default all 60k; quick 10k")
    p.add_argument("--resnet-images", type=int, default=None, help="default 10000; quick 2000")
    p.add_argument("--models", nargs="+", default=["fc", "resnet20"], choices=["fc", "resnet20"])
    p.add_argument("--quick", action="store_true", help="small subsets, one seed: checks it works")
    args = p.parse_args(argv)

    import pandas as pd
    from utils.train import available_cores
    threads = args.threads or available_cores()
    os.environ["SPARSE_NUM_THREADS"] = str(threads)
    cases = {"fc": ("mnist", args.fc_density / 100, args.fc_seeds or ([21] if args.quick else [21, 42, 63]),
                    args.fc_images or (10000 if args.quick else None)),
             "resnet20": ("cifar10", args.resnet_density / 100, args.resnet_seeds or [21],
                          args.resnet_images or (2000 if args.quick else 10000))}
    print(f"torch {torch.__version__}, {threads} thread(s), {args.epochs} epoch(s)", flush=True)
    rows = []
    for name in args.models:
        dataset, density, seeds, n = cases[name]
        data, kind = load_data(dataset, args.data_dir, n, None)
        if kind != "real":
            print(f"warning: {dataset} not found, synthetic data: accuracies are meaningless", file=sys.stderr)
        for seed in seeds:
            fp32 = train_once(name, data, density, seed, False, args.epochs)
            bf16 = train_once(name, data, density, seed, True, args.epochs)
            rows.append({"model": name, "density %": 100 * density, "images": len(data.train_y), "seed": seed,
                         "fp32 top1": fp32["top1"], "bf16 top1": bf16["top1"],
                         "bf16 top1 (fp32 eval)": bf16["top1_fp32_eval"],
                         "delta (bf16 - fp32)": bf16["top1"] - fp32["top1"],
                         "fp32 s": fp32["seconds"], "bf16 s": bf16["seconds"]})
            print(f"{name} seed {seed}: fp32 {fp32['top1']:.2f}  bf16 {bf16['top1']:.2f}", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.round(2).to_markdown(index=False))
    print()
    for name, part in table.groupby("model", sort=False):
        mean = part["delta (bf16 - fp32)"].mean()
        print(f"{name}: mean delta {mean:+.2f} pt over {len(part)} seed(s) "
              f"({'within' if abs(mean) <= 0.5 else 'OUTSIDE'} the 0.5 pt target)")
    return table


if __name__ == "__main__":
    main()
