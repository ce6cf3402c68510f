"""Inference latency and weight memory: dense vs masked vs CSR, FC and ResNet-20.

For each model and density (random global masks with an exact count) and batch size,
times one forward pass (median of ``--repeats`` after a warm-up, ``torch.inference_mode``)
of three versions of the same network:

* ``dense``  plain dense layers holding the effective weights (no parametrization),
* ``masked`` the project's format (dense weight + bool ``Mask`` parametrization),
* ``csr``    every Linear (FC) / Linear+Conv2d (ResNet-20) converted by
  ``utils.toolkits.sparse.convert_model(..., target="csr")``.

Reports ratios to ``dense`` (time) and weight bytes (``memory_report``; biases and BN
excluded).  Usage::

    python benchmarks/bench_sparse_inference.py               # full table (~5 min)
    python benchmarks/bench_sparse_inference.py --quick       # fewer repeats
    python benchmarks/bench_sparse_inference.py --threads 2 --csv out.csv

Default is one intra-op thread: on a shared 2-core machine OpenMP with 2 threads
thrashes and makes timings meaningless.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.fc import fc  # noqa: E402
from models.masks import prunable_layers, set_masks  # noqa: E402
from models.resnet import resnet20  # noqa: E402
from utils.toolkits.sparse import convert_model, latency_ms, memory_report, plain_dense  # noqa: E402

MODELS = {"fc": (fc, (1, 28, 28), (nn.Linear,)),
          "resnet20": (resnet20, (3, 32, 32), (nn.Linear, nn.Conv2d))}


def random_global_masks(model: nn.Module, density: float, seed: int) -> dict[str, torch.Tensor]:
    """Exactly round(d * N) kept weights chosen uniformly over all prunable layers."""
    layers = prunable_layers(model)
    sizes = [li.weight.numel() for li in layers.values()]
    total = sum(sizes)
    keep = torch.zeros(total, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    keep[torch.randperm(total, generator=g)[:round(density * total)]] = True
    masks, start = {}, 0
    for (name, layer), n in zip(layers.items(), sizes):
        masks[name] = keep[start:start + n].reshape(layer.weight.shape)
        start += n
    return masks


def run(models, densities, batches, repeats, seed=0) -> pd.DataFrame:
    rows = []
    for name in models:
        build, shape, types = MODELS[name]
        for d in densities:
            torch.manual_seed(seed)
            masked = build()
            set_masks(masked, random_global_masks(masked, d / 100, seed))
            masked.eval()
            dense = plain_dense(masked)
            csr = convert_model(masked, types, "csr")
            mem = memory_report(masked).iloc[-1]
            for b in batches:
                x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(1))
                with torch.inference_mode():
                    err = (csr(x) - dense(x)).abs().max().item()
                t_dense = latency_ms(dense, x, repeats)
                t_masked = latency_ms(masked, x, repeats)
                t_csr = latency_ms(csr, x, repeats)
                rows.append(dict(model=name, density=d, batch=b, dense_ms=t_dense, masked_ms=t_masked,
                                 csr_ms=t_csr, masked_vs_dense=t_masked / t_dense,
                                 csr_vs_dense=t_csr / t_dense,
                                 dense_kB=mem["dense_bytes"] / 1e3, masked_kB=mem["masked_bytes"] / 1e3,
                                 csr_kB=mem["csr_bytes"] / 1e3,
                                 csr_mem_vs_dense=mem["csr_bytes"] / mem["dense_bytes"],
                                 max_abs_diff=err))
                print(f"{name:9s} d={d:>3}% b={b:<4d} dense {t_dense:9.3f} ms  masked {t_masked:9.3f} ms  "
                      f"csr {t_csr:9.3f} ms", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--densities", nargs="+", type=float, default=[2, 5, 10, 20, 50],
                   help="densities in %% remaining")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 256])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="5 repeats")
    p.add_argument("--csv", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = run(args.models, args.densities, args.batches, 5 if args.quick else args.repeats)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); times are medians per forward")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return table


if __name__ == "__main__":
    main()
