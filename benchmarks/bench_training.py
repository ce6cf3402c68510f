"""Training throughput (img/s): the project's engine vs a naive reference loop, same process.

    .venv/bin/python benchmarks/bench_training.py --data-dir /tmp/cifar            # full (~10 min)
    .venv/bin/python benchmarks/bench_training.py --data-dir /tmp/cifar --quick    # ~2 min
    .venv/bin/python benchmarks/bench_training.py --models resnet20 --compile --batch 128
    .venv/bin/python benchmarks/bench_training.py --models fc --profile-ops        # torch.profiler top ops
    .venv/bin/python benchmarks/bench_training.py --data-dir data --batched 4,8,16 # batched FC runs

Models: FC/MNIST and ResNet-20/CIFAR-10, each dense (all-ones masks) and sparse (2 %,
random global masks through the project's ``random`` pruner).  Per case, one table row per
trainer, all measured in this run:

* ``naive``        torch ``DataLoader`` over a ``TensorDataset`` of pre-normalised float
  tensors (shuffled, batch 64, no augmentation), fp32, NCHW, and the plain loop of the
  thesis code (zero_grad / forward / cross-entropy / backward / step / ``loss.item()``);
* ``engine fp32``  ``utils.engine.train.train`` with bf16 and channels_last off (the data pipeline
  alone: uint8 in memory, batched normalise + augmentation, no per-step sync);
* ``engine``       conv nets only: ``utils.engine.train.train`` with its defaults (channels_last on
  CPU, + bf16 autocast where the CPU has native bf16; FC stays fp32, so this row is ``engine fp32``);
* ``engine bf16``  ``TrainConfig(bf16=True)`` (conv nets: + channels_last); on a CPU without
  native bf16 (AVX2 only) this row shows what emulated bf16 costs;
* ``engine b=B``   the same with batch size B (``--batch B``; changes the optimisation!);
* ``engine+compile`` the model wrapped in ``torch.compile`` (``--compile``; compile time
  excluded: the first epoch is a warm-up).

Throughput is images / second of training-step time (the engine's per-epoch ``seconds``,
evaluation excluded), median over ``--repeats`` epochs after one warm-up epoch.  ``ratio``
is engine / naive of the same case.  Both sides use the same masked model (the mask is a
parametrization, ``W * mask`` each step), the same optimiser (SGD as in the profile) and
the same number of threads (``--threads``, default all cores the process may use).

``--jobs-compare`` (on by default with 2+ threads) also measures, per model, the ``sweep
--jobs 2`` layout: two processes with one thread each training at the same time (summed
img/s) vs one process with two threads.

Data: ``--data-dir`` holding ``mnist/`` and/or ``cifar-10-batches-py/`` (build CIFAR-10 with
``python ../shared/data/make_cifar10.py /tmp/cifar``); a missing dataset is replaced by
random uint8 images of the right shape (fine for throughput; marked "synthetic").
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import CASES, build, load_data, machine_line, use_threads  # noqa: E402


# ----------------------------------------------------------------------------- trainers
def naive_throughput(model, data, opt_kwargs: dict, batch: int, repeats: int, threads: int) -> float:
    """The thesis-style loop: DataLoader(TensorDataset(float x, y)), fp32, NCHW, .item() per step."""
    from torch.utils.data import DataLoader, TensorDataset

    from utils.engine.data import normalize
    torch.set_num_threads(threads)
    x = normalize(data.train_x, data.info)            # float32 (N, C, H, W), done once, untimed
    loader = DataLoader(TensorDataset(x, data.train_y), batch_size=batch, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), **opt_kwargs)
    model.train()

    def epoch() -> float:
        start, total = time.perf_counter(), 0.0
        for xb, yb in loader:
            opt.zero_grad()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
        return time.perf_counter() - start

    epoch()                                            # warm-up (oneDNN primitives, allocator)
    times = [epoch() for _ in range(repeats)]
    return len(data.train_y) / statistics.median(times)


def engine_throughput(model, data, opt_kwargs: dict, batch: int, repeats: int, threads: int,
                      bf16: bool | None = None, compile_model: bool = False) -> float:
    """``utils.engine.train.train`` for 1 + ``repeats`` epochs; median img/s of the timed epochs."""
    from utils.engine.train import TrainConfig, train
    os.environ["SPARSE_NUM_THREADS"] = str(threads)
    cfg = TrainConfig(epochs=1 + repeats, batch_size=batch, bf16=bf16,
                      channels_last=None if bf16 is None else bf16, eval_batch_size=1000, **opt_kwargs)
    if compile_model:
        model = torch.compile(model)
    history = train(model, data, cfg, seed=21, log_initial=False, progress=False)
    seconds = history["seconds"].iloc[1:]
    return len(data.train_y) / statistics.median(seconds)


# ----------------------------------------------------------------------------- jobs-2 comparison
def _worker(args):
    model_name, threads, data_dir, n_train, repeats, barrier, out = args
    os.environ["SPARSE_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    dataset, opt_kwargs = CASES[model_name]
    data, _ = load_data(dataset, data_dir, n_train, 500)
    model = build(model_name, sparse=True)
    barrier.wait()
    out.put(engine_throughput(model, data, opt_kwargs, 64, repeats, threads))


def jobs_compare(model_name: str, data_dir, n_train: int, repeats: int, cores: int) -> list[dict]:
    """Sparse model, engine: 1 process x ``cores`` threads vs ``cores`` processes x 1 thread (summed)."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    rows = []
    for procs, threads in ((1, cores), (cores, 1)):
        barrier, out = ctx.Barrier(procs), ctx.Queue()
        workers = [ctx.Process(target=_worker,
                               args=((model_name, threads, data_dir, n_train, repeats, barrier, out),))
                   for _ in range(procs)]
        for w in workers:
            w.start()
        rates = [out.get() for _ in workers]
        for w in workers:
            w.join()
        rows.append({"layout": f"{procs} process(es) x {threads} thread(s)", "img_s": sum(rates),
                     "per_process": rates})
    return rows


# ----------------------------------------------------------------------------- batched FC
def batched_rate(data, opt_kwargs: dict, k: int, repeats: int) -> float:
    """img/s of ``k`` sparse FC runs trained together (:func:`utils.engine.batched.train_batched`),
    one thread: k × images / median epoch time (evaluation excluded)."""
    from utils.engine.batched import train_batched
    from utils.engine.train import TrainConfig
    torch.set_num_threads(1)
    models = [build("fc", sparse=True, seed=21 + i) for i in range(k)]
    cfg = TrainConfig(epochs=1 + repeats, batch_size=64, eval_batch_size=1000, **opt_kwargs)
    histories = train_batched(models, data, cfg, seeds=[21 + i for i in range(k)], progress=False)
    seconds = histories[0]["seconds"].iloc[2:] * k          # the group's epoch time
    return k * len(data.train_y) / statistics.median(seconds)


def _batched_worker(args):
    data_dir, n_train, repeats, k, barrier, out = args
    os.environ["SPARSE_NUM_THREADS"] = "1"
    dataset, opt_kwargs = CASES["fc"]
    data, _ = load_data(dataset, data_dir, n_train, 500)
    barrier.wait()
    out.put(batched_rate(data, opt_kwargs, k, repeats) if k > 1 else
            engine_throughput(build("fc", sparse=True), data, opt_kwargs, 64, repeats, 1))


def batched_compare(data_dir, n_train: int, repeats: int, ks: list[int], procs: int) -> list[dict]:
    """FC sparse 2 %, one thread per process: the naive loop (1 process), ``sweep --jobs
    procs`` with every run alone (k = 1) and with k runs per process, all processes at once;
    summed img/s over the processes."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    data, _ = load_data(CASES["fc"][0], data_dir, n_train, 500)
    naive = naive_throughput(build("fc", sparse=True), data, CASES["fc"][1], 64, repeats, 1)
    rows = [{"layout": "naive loop, 1 process x 1 thread", "img_s": naive, "ratio": 1.0}]
    for k in [1, *ks]:
        barrier, out = ctx.Barrier(procs), ctx.Queue()
        workers = [ctx.Process(target=_batched_worker, args=((data_dir, n_train, repeats, k, barrier, out),))
                   for _ in range(procs)]
        for w in workers:
            w.start()
        rate = sum(out.get() for _ in workers)
        for w in workers:
            w.join()
        label = f"{procs} process(es) x 1 thread, " + ("runs alone (today's --jobs)" if k == 1 else f"{k} runs batched")
        rows.append({"layout": label, "img_s": rate, "ratio": rate / naive})
    return rows


# ----------------------------------------------------------------------------- profile
def profile_ops(model_name: str, data, opt_kwargs: dict, threads: int, steps: int = 20, top: int = 15) -> str:
    """torch.profiler table (self CPU time) of ``steps`` engine training steps."""
    from torch.profiler import ProfilerActivity, profile

    from utils.engine.data import batches
    from utils.engine.seeding import generator
    from utils.engine.train import _prepare_input, has_conv
    torch.set_num_threads(threads)
    model = build(model_name, sparse=True)
    conv = has_conv(model)
    if conv:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), **opt_kwargs)
    gen = generator(21, "data")

    def run(n):
        it = batches(data.train_x, data.train_y, 64, data.info, shuffle=True, generator=gen, train_augment=True)
        for _, (xb, yb) in zip(range(n), it):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=conv):
                logits = model(_prepare_input(xb, conv))
            loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(5)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(steps)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


# ----------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--data-dir", help="directory with mnist/ and/or cifar-10-batches-py/")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all available cores)")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per trainer (default 3; quick 1)")
    p.add_argument("--fc-images", type=int, default=None, help="MNIST images per epoch (default 20000; quick 5000)")
    p.add_argument("--resnet-images", type=int, default=None,
                   help="CIFAR-10 images per epoch (default 5120; quick 1280)")
    p.add_argument("--batch", type=int, default=None, help="also time the engine at this batch size")
    p.add_argument("--compile", action="store_true", help="also time the engine with torch.compile(model)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive loop (engine rows only)")
    p.add_argument("--jobs-compare", choices=("auto", "on", "off"), default="auto",
                   help="per model: 2 processes x 1 thread vs 1 process x 2 threads (auto: on with 2+ threads)")
    p.add_argument("--profile-ops", action="store_true", help="print torch.profiler top ops of engine steps")
    p.add_argument("--batched", type=lambda s: [int(k) for k in s.split(",")], default=None,
                   help="FC runs per process to time batched, e.g. 4,8,16 (naive loop, --jobs and batched "
                        "layouts, summed img/s per sweep); skips the other tables")
    p.add_argument("--quick", action="store_true", help="small subsets and 1 timed epoch: checks it works")
    p.add_argument("--csv", type=Path, help="also write the table here")
    args = p.parse_args(argv)

    import pandas as pd
    threads = use_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    n_images = {"fc": args.fc_images or (5000 if args.quick else 20000),
                "resnet20": args.resnet_images or (1280 if args.quick else 5120)}
    print(machine_line(threads), flush=True)

    if args.batched:
        print(f"\nFC sparse 2 %, b=64, {n_images['fc']} images/epoch: images per second per sweep")
        for row in batched_compare(args.data_dir, n_images["fc"], repeats, args.batched, max(threads, 1)):
            print(f"  {row['layout']:45s} {row['img_s']:9.0f} img/s   x{row['ratio']:.2f} the naive loop", flush=True)
        return None

    rows = []
    for name in args.models:
        dataset, opt_kwargs = CASES[name]
        data, kind = load_data(dataset, args.data_dir, n_images[name], 500)
        for sparse in (False, True):
            case = f"{name} {'sparse 2%' if sparse else 'dense'}"
            trainers = []
            if not args.no_naive:
                trainers.append(("naive b=64", lambda m, data=data, opt_kwargs=opt_kwargs: naive_throughput(
                    m, data, opt_kwargs, 64, repeats, threads)))
            trainers.append(("engine fp32", lambda m, data=data, opt_kwargs=opt_kwargs: engine_throughput(
                m, data, opt_kwargs, 64, repeats, threads, bf16=False)))
            if name != "fc":   # the FC engine default *is* fp32
                trainers.append(("engine", lambda m, data=data, opt_kwargs=opt_kwargs: engine_throughput(
                    m, data, opt_kwargs, 64, repeats, threads)))
            trainers.append(("engine bf16", lambda m, data=data, opt_kwargs=opt_kwargs: engine_throughput(
                m, data, opt_kwargs, 64, repeats, threads, bf16=True)))
            if args.batch:
                trainers.append((f"engine b={args.batch}", lambda m, data=data, opt_kwargs=opt_kwargs:
                                 engine_throughput(
                    m, data, opt_kwargs, args.batch, repeats, threads)))
            if args.compile:
                trainers.append(("engine+compile", lambda m, data=data, opt_kwargs=opt_kwargs: engine_throughput(
                    m, data, opt_kwargs, 64, repeats, threads, compile_model=True)))
            naive = None
            for trainer, fn in trainers:
                rate = fn(build(name, sparse))
                naive = rate if trainer.startswith("naive") else naive
                rows.append({"case": case, "data": kind, "images": len(data.train_y), "trainer": trainer,
                             "img_s": round(rate), "ratio": round(rate / naive, 2) if naive else float("nan")})
                print(f"{case:18s} {trainer:15s} {rate:9.0f} img/s", file=sys.stderr, flush=True)

    table = pd.DataFrame(rows)
    print()
    print(table.to_markdown(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)

    if args.jobs_compare == "on" or (args.jobs_compare == "auto" and threads >= 2):
        for name in args.models:
            print(f"\n{name} sparse 2%, engine, b=64: sweep --jobs layouts (all processes train at once)")
            for row in jobs_compare(name, args.data_dir, n_images[name], repeats, threads):
                print(f"  {row['layout']:30s} {row['img_s']:9.0f} img/s total  "
                      f"(per process: {', '.join(f'{r:.0f}' for r in row['per_process'])})", flush=True)

    if args.profile_ops:
        for name in args.models:
            dataset, opt_kwargs = CASES[name]
            data, _ = load_data(dataset, args.data_dir, 2048, 100)
            print(f"\ntorch.profiler, {name} sparse 2%, engine steps (b=64, "
                  f"{'bf16 + channels_last' if name != 'fc' else 'fp32'}), top ops by self CPU time:")
            print(profile_ops(name, data, opt_kwargs, threads))
    return table


if __name__ == "__main__":
    main()
