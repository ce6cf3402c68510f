"""Gem-Miner mining settings on the validation split: per-epoch flags per layer, and fragility.

    .venv/bin/python benchmarks/probe_gem_miner_mining.py --lr 0.05 --period 2 --epochs 60 --density 0.02
    .venv/bin/python benchmarks/probe_gem_miner_mining.py --lr 0.05 --period 1 --epochs 30 --score-l2 1e-4
    .venv/bin/python benchmarks/probe_gem_miner_mining.py --fragility     # ~8 min on one idle core

What ``configs/resnet20_cifar10.yaml`` records under ``gem_miner_search`` comes from here.
ResNet-20 mines on the first 45,000 CIFAR-10 training images and is evaluated on the last
5,000 (never the test set), seed 21, global BottomK, λ ``--score-l2`` (default 1e-8), wd 0,
SGD 0.9 cosine over the mining epochs.  After every epoch (after that epoch's prune) it prints
λΣs² and the flag and effective
densities of conv1, blocks.0.conv1, blocks.4.conv1, blocks.8.conv2 and fc; at the end a JSON
line with the validation accuracies and every layer's final flag density (``--out`` also
writes it to a file).

``--fragility`` instead mines 6 epochs at lr 0.05, prune period 1 (flags ≈ 0.51: every inactive
score pruned, no active one yet), recomputes the BN statistics on 40 training batches, and
evaluates the mined net as is and with 12 % / 30 % of its active weights removed, by lowest
score (what the next prunes do) and at random.

Threads: ``$SPARSE_NUM_THREADS`` (the training engine sets torch's thread count from it; default
all cores).  Run it alone or with one thread per process: oversubscribed OpenMP threads make
it tens of times slower.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model  # noqa: E402
from pruners import get_method  # noqa: E402
from pruners.gem_miner import gem_masks  # noqa: E402
from utils.engine.data import batches, load_dataset  # noqa: E402
from utils.engine.train import TrainConfig, evaluate  # noqa: E402

SHOWN = ("conv1", "blocks.0.conv1", "blocks.4.conv1", "blocks.8.conv2", "fc")


class _Stop(Exception):
    pass


def mine(data, lr: float, period: float, epochs: int, density: float, seed: int = 21, stop_after: int | None = None,
         score_l2: float = 1e-8):
    """Mine ResNet-20 scores; returns (model, method, validation top-1 per epoch)."""
    method = get_method("gem-miner", period=period, lr=lr, momentum=0.9, weight_decay=0.0, score_l2=score_l2,
                        batch_size=128, scope="global", mining_epochs=epochs, log_val=False)
    model = build_model("resnet20", **method.model_kwargs["resnet20"])
    method.prepare(model, seed)

    def monitor(epoch: int, m) -> None:
        masks = gem_masks(m)
        flags = {n: float(masks[n].flag.float().mean()) for n in SHOWN}
        eff = {n: float(masks[n].current_mask().float().mean()) for n in SHOWN}
        sum_sq = float(sum((p.scores.detach().double() ** 2).sum() for p in masks.values()))
        print(f"epoch {epoch}: λΣs² {score_l2 * sum_sq:.6g}  "
              + "  ".join(f"{n} flag {flags[n]:.3f} eff {eff[n]:.3f}" for n in SHOWN), flush=True)
        if stop_after is not None and epoch == stop_after:
            raise _Stop

    try:
        history, _ = method.mine(model, data, density, TrainConfig(epochs=epochs, batch_size=128), seed=seed,
                                 epochs=epochs, progress=True, monitor=monitor)
        val = [round(float(v), 2) for v in history["top1"]]
    except _Stop:
        val = []
    return model, method, val


def recalibrated_top1(model, data, steps: int = 40) -> float:
    """Validation top-1 after recomputing the BN statistics on ``steps`` training batches."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None          # cumulative average over the batches below
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i, (xb, _) in enumerate(batches(data.train_x, data.train_y, 128, data.info, shuffle=True,
                                            generator=gen, train_augment=False)):
            if i == steps:
                break
            model(xb.contiguous(memory_format=torch.channels_last))
    return evaluate(model, data.test_x, data.test_y, data, 1000, "cpu", True, True)["top1"]


def without_active(model, fraction: float, how: str, gen: torch.Generator):
    """A copy with ``fraction`` of the active weights unflagged: lowest scores, or at random."""
    model = copy.deepcopy(model)
    masks = gem_masks(model)
    active = {n: p.current_mask() for n, p in masks.items()}
    key = {n: p.scores.detach() if how == "lowest" else torch.rand(p.scores.shape, generator=gen)
           for n, p in masks.items()}
    values = torch.cat([key[n][active[n]] for n in masks])
    threshold = values.kthvalue(int(fraction * values.numel())).values
    for n, p in masks.items():
        p.flag &= ~(active[n] & (key[n] <= threshold))
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--period", type=float, default=2)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--score-l2", type=float, default=1e-8, help="λ of the λΣs² term")
    parser.add_argument("--stop-after", type=int, help="stop after this epoch (0-based)")
    parser.add_argument("--fragility", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    data = load_dataset("cifar10", args.data_dir).holdout(5000)
    if args.fragility:
        model, _, _ = mine(data, 0.05, 1, 30, args.density, stop_after=5)
        gen = torch.Generator().manual_seed(1)
        out = {"as_is": recalibrated_top1(model, data)}
        for fraction in (0.12, 0.3):
            for how in ("lowest", "random"):
                out[f"{how}_{fraction}"] = recalibrated_top1(without_active(model, fraction, how, gen), data)
    else:
        model, _, val = mine(data, args.lr, args.period, args.epochs, args.density, stop_after=args.stop_after,
                            score_l2=args.score_l2)
        out = {"lr": args.lr, "score_l2": args.score_l2, "period": args.period, "epochs": args.epochs,
               "density": args.density, "val": val,
               "final_flag_density": {n: round(float(p.flag.float().mean()), 4) for n, p in gem_masks(model).items()}}
    print(json.dumps(out), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
