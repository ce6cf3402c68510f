"""Cost of the pruners: SynFlow scoring on ResNet-20, and Gem-Miner mining and DEEPR training vs dense epochs.

    .venv/bin/python benchmarks/bench_pruning.py --data-dir /tmp/cifar            # ~5 min idle
    .venv/bin/python benchmarks/bench_pruning.py --data-dir /tmp/cifar --quick    # ~1 min

1. **SynFlow**, ResNet-20 (option B), density 2 %: ``synflow_prune`` with 1 level × N
   iterations (N = 100; quick 10), i.e. N float64 forward/backward scorings plus N global
   exact-k selections.  Reports the total, the time per scoring and the implied time of the
   thesis/cpu schedule 10 × 100 (= 10 × the 100-iteration time); then the exact-k selection
   alone against the stable argsort it replaced (``--synflow-only`` stops here).
2. **Gem-Miner**: one mining epoch (scores trained through the STE mask, batch 128, SGD
   0.9 cosine, one BottomK prune after the epoch) vs one ordinary training epoch of the
   dense model with the engine (same batch 128, and batch 64 = the SynFlow/random
   protocol), on the first ``--images`` training images (default 10,000; quick 2,000).
   ResNet-20/CIFAR-10 and FC/MNIST.  Times are the engine's per-epoch ``seconds`` (training
   steps + the after-epoch hook, evaluation excluded), median of ``--repeats`` epochs after
   a warm-up epoch.
3. **DEEPR**: one training epoch at 10 % (batch 128, plain SGD as in the configs: ResNet-20
   cpu profile lr 1.0, FC lr 0.1; l1 1e-5, temperature 5e-12, scaled init) against the same
   dense b=128 epoch: the rewiring step's cost on top of ordinary training, which is what
   `sweep --dry-run` cannot estimate before a DEEPR run of the model is stored.

Threads: ``--threads`` (default all cores this process may use).  A missing dataset is
replaced by random images (throughput only).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CASES, load_data, machine_line, use_threads  # noqa: E402


def bench_synflow(iterations: int, density: float = 0.02, seed: int = 21) -> dict:
    from models import resnet20
    from pruners.synflow import synflow_prune
    from utils.engine.seeding import generator, seed_init
    seed_init(seed)
    model = resnet20()
    start = time.perf_counter()
    log = synflow_prune(model, density, data_shape=(3, 32, 32), levels=1, iterations=iterations,
                        generator=generator(seed, "prune"))
    total = time.perf_counter() - start
    return {"iterations": iterations, "seconds": total, "ms_per_scoring": 1e3 * total / iterations,
            "est_10x100_s": total / iterations * 1000, "density": log[-1]["density"]}


def bench_selection(repeats: int = 20, density: float = 0.1) -> dict:
    """The exact-k selection on ResNet-20's 270,896 scores: ``select_global`` (one ``kthvalue``
    and the tied entries) against the full stable argsort it replaced (the same masks), ms per call."""
    import torch

    from models import prunable_layers, resnet20
    from pruners.base import _top_k_ties_by_perm, kept_count
    torch.manual_seed(21)
    flat = torch.cat([m.weight.detach().double().abs().reshape(-1) for m in prunable_layers(resnet20()).values()])
    k, perm = kept_count(density, flat.numel()), torch.randperm(flat.numel())

    def argsort_rule():
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[perm[torch.argsort(flat[perm], descending=True, stable=True)][:k]] = True
        return keep

    def timed(fn) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return 1e3 * (time.perf_counter() - start) / repeats
    assert torch.equal(argsort_rule(), _top_k_ties_by_perm(flat, k, perm))
    sort_ms, select_ms = timed(argsort_rule), timed(lambda: _top_k_ties_by_perm(flat, k, perm))
    return {"weights": flat.numel(), "argsort_ms": sort_ms, "select_ms": select_ms, "ratio": sort_ms / select_ms}


def _epoch_seconds(history, repeats: int) -> float:
    return statistics.median(history["seconds"].iloc[-repeats:])


def bench_epochs(model_name: str, data, repeats: int, seed: int = 21) -> list[dict]:
    """Per-epoch seconds of dense training (b=64, b=128), Gem-Miner mining and DEEPR training."""
    from models import build_model
    from pruners.gem_miner import GemMiner
    from utils.engine.seeding import seed_init
    from utils.engine.train import TrainConfig, train
    opt = CASES[model_name][1]
    rows = []
    for batch in (64, 128):
        seed_init(seed)
        model = build_model(model_name)
        cfg = TrainConfig(epochs=1 + repeats, batch_size=batch, **opt)
        hist = train(model, data, cfg, seed=seed, log_initial=False, progress=False)
        rows.append({"model": model_name, "phase": f"dense training b={batch}",
                     "epoch_s": _epoch_seconds(hist, repeats)})
    # Mining as in the configs (ResNet cpu profile: lr 0.05, wd 0, λ 1e-8; FC: lr 0.1, wd 5e-4, λ 1e-4).
    options = ({"period": 1, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "score_l2": 1e-8}
               if model_name == "resnet20" else
               {"period": 1, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "score_l2": 1e-4})
    method = GemMiner(batch_size=128, sanity_checks=False, log_val=False, **options)
    seed_init(seed)
    model = build_model(model_name, **method.model_kwargs[model_name])
    method.prepare(model, seed)
    hist, _ = method.mine(model, data, 0.02, TrainConfig(epochs=1 + repeats), seed=seed,
                          epochs=1 + repeats, progress=False)
    rows.append({"model": model_name, "phase": "gem-miner mining b=128", "epoch_s": _epoch_seconds(hist, repeats)})
    rows.append({"model": model_name, "phase": "deepr training b=128",
                 "epoch_s": _deepr_epoch(model_name, data, repeats)})
    dense128 = rows[1]["epoch_s"]
    for row in rows:
        row["vs dense b=128"] = row["epoch_s"] / dense128
        row["img_s"] = len(data.train_y) / row["epoch_s"]
    return rows


def _deepr_epoch(model_name: str, data, repeats: int, seed: int = 21, density: float = 0.1) -> float:
    from models import build_model
    from pruners.deepr import DeepRMethod
    from utils.engine.seeding import seed_init
    from utils.engine.train import TrainConfig
    method = DeepRMethod(init="scaled", l1=1e-5, temp=5e-12)
    cfg = TrainConfig(epochs=1 + repeats, batch_size=128, lr=1.0 if model_name == "resnet20" else 0.1,
                      momentum=0.0, nesterov=False, weight_decay=0.0)
    seed_init(seed)
    result = method.run(build_model(model_name), data, density, cfg, seed=seed, progress=False)
    return _epoch_seconds(result["deepr"].history, repeats)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="directory with mnist/ and/or cifar-10-batches-py/")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--iterations", type=int, default=None, help="SynFlow iterations (default 100; quick 10)")
    p.add_argument("--images", type=int, default=None, help="training images per epoch (default 10000; quick 2000)")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs (default 2; quick 1)")
    p.add_argument("--models", nargs="+", default=["resnet20", "fc"], choices=["resnet20", "fc"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--synflow-only", action="store_true", help="only the SynFlow scoring and the exact-k selection")
    args = p.parse_args(argv)

    import pandas as pd
    threads = use_threads(args.threads)
    iterations = args.iterations or (10 if args.quick else 100)
    images = args.images or (2000 if args.quick else 10000)
    repeats = args.repeats or (1 if args.quick else 2)
    print(machine_line(threads), flush=True)

    s = bench_synflow(iterations)
    print(f"\nSynFlow, ResNet-20, 1 level x {s['iterations']} iterations to {100 * s['density']:.3f} %: "
          f"{s['seconds']:.1f} s ({s['ms_per_scoring']:.0f} ms per scoring); "
          f"10 x 100 schedule ≈ {s['est_10x100_s']:.0f} s", flush=True)
    sel = bench_selection()
    print(f"exact-k selection of {sel['weights']:,} scores: stable argsort {sel['argsort_ms']:.1f} ms, "
          f"kthvalue + ties {sel['select_ms']:.1f} ms ({sel['ratio']:.1f}x)", flush=True)
    if args.synflow_only:
        return s, None

    rows = []
    for name in args.models:
        data, kind = load_data("cifar10" if name == "resnet20" else "mnist", args.data_dir, images, 500)
        for row in bench_epochs(name, data, repeats):
            rows.append({**row, "data": kind, "images": images})
            print(f"{name:9s} {row['phase']:24s} {row['epoch_s']:7.2f} s", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)[["model", "data", "images", "phase", "epoch_s", "img_s", "vs dense b=128"]]
    print()
    print(table.round(2).to_markdown(index=False))
    return s, table


if __name__ == "__main__":
    main()
