"""Command line: ``python -m utils.cli {train,sweep,runs,verify,compact,summary,import-thesis,compare-thesis} ...``.

Densities on the command line are % of prunable weights remaining, in (0, 100].
Bad input (unknown experiment/method/profile, a density outside (0, 100], missing
or corrupt data or runs) prints one ``error: ...`` line and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys

from .errors import UserError


def _csv(cast):
    return lambda text: [cast(x) for x in text.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", help="hyperparameter profile of the config (default: the config's)")
    common.add_argument("--data-dir", help="dataset directory (default $SPARSE_DATA_DIR, else data/)")
    common.add_argument("--results", help="runs store root (default: the repository's results/)")
    common.add_argument("--epochs", type=int, help="override the profile's epochs (recorded in run.json)")
    common.add_argument("--train-subset", type=int, help="use only the first N training images")
    common.add_argument("--test-subset", type=int, help="use only the first N test images")
    common.add_argument("--validation", type=int, metavar="N",
                        help="hold out the last N training images and evaluate on them instead of the "
                             "test set (for choosing a recipe; recorded in run.json)")
    common.add_argument("--jpeg-quality", type=int, metavar="Q",
                        help="re-encode every image as JPEG at quality Q first (the image-quality experiment)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    train = sub.add_parser("train", parents=[common], help="train and store one run")
    train.add_argument("--experiment", required=True, help="config name, e.g. fc_mnist, resnet20_cifar10")
    train.add_argument("--method", required=True, help="e.g. random, synflow, gem-miner, deepr, dnw")
    train.add_argument("--density", required=True, help="%% of weights remaining, in (0, 100]")
    train.add_argument("--seed", type=int, required=True)
    train.add_argument("--force", action="store_true", help="retrain even if the run is stored")
    train.add_argument("--threads", type=int, default=None,
                       help="torch threads (default 1, as the stored runs: other counts round differently)")

    sweep = sub.add_parser("sweep", parents=[common], help="train every run of a config not yet stored")
    sweep.add_argument("config", help="config file or experiment name")
    sweep.add_argument("--methods", type=_csv(str), help="comma-separated subset of methods")
    sweep.add_argument("--densities", type=_csv(float), help="comma-separated subset of densities (%%)")
    sweep.add_argument("--seeds", type=_csv(int), help="comma-separated subset of seeds")
    sweep.add_argument("--jobs", type=int, default=None,
                       help="runs at once in separate processes (default: one per core on CPU, 1 on a GPU)")
    sweep.add_argument("--threads", type=int, default=None,
                       help="torch threads per run (default 1, as the stored runs: other counts round "
                            "differently)")
    sweep.add_argument("--batch-runs", type=int, default=None,
                       help="FC runs that train alike go this many at a time through one process "
                            "(default 8, measured in benchmarks/README.md; 1: every run alone)")
    sweep.add_argument("--max-runs", type=int, help="stop after this many runs")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs still to do")
    from utils.runs.launch import add_launcher_arguments
    add_launcher_arguments(sweep)

    runs = sub.add_parser("runs", help="list stored runs")
    runs.add_argument("--results", help="runs store root")

    verify = sub.add_parser("verify", help="check the checksums of every stored run and load it "
                                           "(final and init weights); --evaluate: and get its top-1 back")
    verify.add_argument("runs", nargs="*", help="run directories to verify (default: every run of the store)")
    verify.add_argument("--results", help="runs store root")
    verify.add_argument("--evaluate", action="store_true",
                        help="also evaluate each run on the test set it recorded (the same copy: checked by "
                             "digest) in the precision it trained in, against its recorded final top-1")
    verify.add_argument("--data-dir", help="dataset directory for --evaluate")
    verify.add_argument("--tolerance", type=float, default=0.1,
                        help="largest |fresh - recorded| top-1 allowed, in points (default 0.1)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")

    compact = sub.add_parser("compact", help="drop from stored init files the values each run's seed "
                                             "regenerates bit for bit (checked on load)")
    compact.add_argument("--results", help="runs store root")
    compact.add_argument("--quiet", action="store_true", help="no progress bar")

    thesis = sub.add_parser("import-thesis", help="import the thesis's own trained networks as runs")
    thesis.add_argument("source", nargs="?",
                        help="a clone of tjayada/sparse_network_analysis or an archive of it (.tar.xz, "
                             ".tar.gz, .zip); default: download the pinned commit")
    thesis.add_argument("--to", help="runs store to write (default $SPARSE_THESIS_DIR, else data/thesis)")
    thesis.add_argument("--quiet", action="store_true", help="no progress bars")

    compare = sub.add_parser("compare-thesis",
                             help="our runs next to the thesis's, cell by cell (results/thesis_comparison.csv)")
    compare.add_argument("--results", help="our runs store (default results/)")
    compare.add_argument("--thesis", help="the imported thesis runs (default $SPARSE_THESIS_DIR, else data/thesis)")
    compare.add_argument("--data-dir", help="CIFAR-10 to re-evaluate the thesis's ResNet-20s on our copy")
    compare.add_argument("--out", help="CSV to write (default <results>/thesis_comparison.csv)")
    compare.add_argument("--experiments", type=_csv(str), default=["fc_mnist", "resnet20_cifar10"],
                         help="comma-separated experiments to compare (default both)")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")

    summary = sub.add_parser("summary", help="rewrite results/summary.csv and results/README.md")
    summary.add_argument("--results", help="runs store root")
    return parser


def _overrides(args):
    from utils.runs.experiment import Overrides
    return Overrides(epochs=args.epochs, train_subset=args.train_subset, test_subset=args.test_subset,
                     validation=args.validation, jpeg_quality=args.jpeg_quality)


def _positive(value: int | None, flag: str) -> int | None:
    if value is not None and value < 1:
        raise UserError(f"{flag} must be at least 1, got {value}")
    return value


def _existing_store(args):
    """The ``--results`` root of a command that reads a store: it must exist (a mistyped path
    is an error, not an empty store, and ``summary`` must not create one)."""
    from pathlib import Path

    from utils.runs.results import DEFAULT_ROOT
    root = Path(args.results or DEFAULT_ROOT)
    if not root.is_dir():
        raise UserError(f"no runs store at {root}")
    return root


def _threads(args) -> int:
    from utils.runs.experiment import RUN_THREADS
    return _positive(args.threads, "--threads") or RUN_THREADS


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are stored; rerun the same command to resume", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    from pathlib import Path

    from utils.runs import results
    from utils.runs.experiment import (
        RunSpec,
        default_jobs,
        execute,
        grid,
        is_done,
        load_config,
        percent_to_fraction,
        profile_of,
    )
    from utils.runs.sweep import BATCH_RUNS, sweep
    if args.command == "train":
        config = load_config(args.experiment)
        profile, values = profile_of(config, args.profile)
        from pruners import get_method
        get_method(args.method)  # fail fast on an unknown method
        spec = RunSpec(config["experiment"], args.method, percent_to_fraction(args.density), args.seed, profile,
                       values.get("version"))
        overrides, threads = _overrides(args), _threads(args)   # bad values fail before anything else
        root = results.DEFAULT_ROOT if args.results is None else args.results
        if not args.force and is_done(spec, Path(root)):
            print(f"already stored: {spec.label} (use --force to retrain)")
            return 0
        paths = execute(spec, config, data_dir=args.data_dir, root=args.results,
                        overrides=overrides, progress=not args.quiet, force=args.force, threads=threads)
        results.write_summary(args.results)
        for path in paths:
            run = results.load_run_dir(path)
            print(f"stored {path}: top-1 {run.history['top1'].iloc[-1]:.2f}%, "
                  f"density {100 * run.info['density_achieved']:.3f}%")
        return 0
    if args.command == "sweep":
        config = load_config(args.config)
        specs = grid(config, args.profile, args.methods, args.densities, args.seeds)
        overrides = _overrides(args)
        from utils.runs.status import estimate_remaining, precision_warning, precisions_here, sweep_status
        root = Path(args.results or results.DEFAULT_ROOT)
        pending = [s for s in specs if not is_done(s, root)]
        here = precisions_here(config, pending, _threads(args))     # one model build for both uses; none if all done
        warning = precision_warning(config, pending, root, here=here)
        if warning:
            print(warning, file=sys.stderr)
        if args.dry_run:
            states = sweep_status(specs, root)
            for state in states:
                print(state.line())
            jobs = _positive(args.jobs, "--jobs") or default_jobs(_threads(args))
            print(estimate_remaining(states, config, results.runs(root), here).line(jobs))
            return 0
        if args.launcher == "submitit":
            from utils.runs.launch import launch_sweep
            return launch_sweep(args, config, specs, args.results, overrides)
        done = sweep(config, specs, data_dir=args.data_dir, root=args.results, overrides=overrides,
                     jobs=_positive(args.jobs, "--jobs"), threads=_threads(args), max_runs=args.max_runs,
                     batch_runs=_positive(args.batch_runs, "--batch-runs") or BATCH_RUNS, progress=not args.quiet)
        print(f"{len(done)} run(s) trained; {len(specs) - len(done)} already stored, claimed by a concurrent "
              f"sweep or left for later")
        return 0
    if args.command == "runs":
        import pandas as pd
        table = results.runs(root := _existing_store(args))
        if table.empty:
            print(f"no stored runs under {root}")
            return 0
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(table.drop(columns="path").to_string(index=False))
        return 0
    if args.command == "verify":
        return _verify(args)
    if args.command == "compact":
        from utils.progress import tqdm

        root = _existing_store(args)
        saved = [results.compact_init(file.parent) for file in tqdm(results.run_files(root), desc="compact",
                                                           disable=args.quiet)]
        print(f"{sum(1 for s in saved if s)} init file(s) compacted under {root}, "
              f"{sum(saved) / 1e6:.1f} MB saved")
        return 0
    if args.command == "import-thesis":
        from utils.runs.thesis import import_thesis, thesis_root
        written = import_thesis(args.source, args.to, progress=not args.quiet)
        print(f"imported {len(written)} thesis run(s) into {args.to or thesis_root()}")
        return 0
    if args.command == "compare-thesis":
        from pathlib import Path

        import pandas as pd

        from utils.engine.train import torch_threads
        from utils.runs.thesis import is_imported, thesis_root
        from utils.runs.thesis_compare import (
            SOURCES,
            compare_with_thesis,
            gem_miner_layer_table,
            gem_miner_sanity_table,
            summary,
        )
        if not is_imported(args.thesis or thesis_root()):
            raise UserError(f"no thesis import at {args.thesis or thesis_root()}: run "
                            f"python -m utils.cli import-thesis [SOURCE] first")
        if not results.run_files(root := _existing_store(args)):
            raise UserError(f"no stored runs under {root} to compare with the thesis's")
        out = Path(args.out or Path(args.results or results.DEFAULT_ROOT) / "thesis_comparison.csv")
        # Gem-Miner's mined per-layer profile and its sanity checks next to the thesis's go beside
        # the comparison table; rows of experiments not compared this time stay as they were, and
        # rows computed from the same runs and test arrays are reused (utils.runs.thesis_compare)
        files = (out, out.with_name("thesis_gem_miner_layers.csv"), out.with_name("thesis_gem_miner_sanity.csv"))
        earlier = [_earlier_table(out, dict.fromkeys(SOURCES, str))] + [_earlier_table(f) for f in files[1:]]
        kept = [None if e is None else e[~e["experiment"].isin(args.experiments)] for e in earlier]
        with torch_threads(1):
            table = compare_with_thesis(args.results, args.thesis, args.data_dir, progress=not args.quiet,
                                        experiments=tuple(args.experiments), previous=earlier[0])
            layers = gem_miner_layer_table(args.results, args.thesis, tuple(args.experiments))
            sanity = gem_miner_sanity_table(args.results, args.thesis, tuple(args.experiments))
        for file, rest, new in zip(files, kept, (table, layers, sanity)):
            results.write_atomic(file, _merged(rest, new).to_csv(index=False, float_format="%.6g").encode())
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(summary(table).to_string())
        print(f"{len(table)} cells compared; written to {out}")
        return 0
    if args.command == "summary":
        root = _existing_store(args)
        if not results.run_files(root):
            # writing would replace a README.md in a directory that is not a store
            raise UserError(f"no stored runs under {root}: nothing to summarise")
        table = results.write_summary(root)
        print(f"summary of {len(table)} runs written")
        return 0
    raise AssertionError(args.command)


def _verify(args) -> int:
    """``verify``: checksums and loading of every run (or the ``runs`` named); with ``--evaluate``
    a line per run, recorded against fresh top-1, and exit 1 when one is off by more than the tolerance."""
    from pathlib import Path

    from utils.engine.data import load_dataset
    from utils.progress import tqdm
    from utils.runs import results
    from utils.runs.reevaluate import reevaluate
    if args.runs:
        paths = [Path(p) for p in args.runs]
        missing = [str(p) for p in paths if not (p / "run.json").is_file()]
        if missing:
            raise UserError(f"not a stored run (no run.json): {', '.join(missing)}")
        where = ""
    else:
        root = _existing_store(args)
        paths, where = [file.parent for file in results.run_files(root)], f" under {root}"
    if args.tolerance < 0:
        raise UserError(f"tolerance must be at least 0, got {args.tolerance}")
    datasets, off = {}, []
    for path in tqdm(paths, desc="verify", disable=args.quiet or not args.evaluate):
        run = results.load_run_dir(path)
        if "init.safetensors" in run.info["files"]:
            run.init_model()
        if args.evaluate:
            name = run.info["dataset"]
            if name not in datasets:
                datasets[name] = load_dataset(name, args.data_dir, download=False)
            check = reevaluate(run, datasets[name])
            flag = "" if abs(check.difference) <= args.tolerance else "  OFF"
            shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            tqdm.write(f"{shown}: recorded {check.recorded:.2f}, fresh {check.fresh:.2f} "
                       f"({check.difference:+.2f} pt, {'bf16' if check.bf16 else 'fp32'}){flag}")
            if flag:
                off.append(str(shown))
    print(f"{len(paths)} stored run(s) verified{where}"
          + (f"; {len(paths) - len(off)} evaluate to their record within {args.tolerance:g} pt" if args.evaluate
             else ""))
    if off:
        print(f"error: {len(off)} run(s) off their recorded top-1 by more than {args.tolerance:g} pt: "
              f"{', '.join(off)}", file=sys.stderr)
        return 1
    return 0


def _earlier_table(file, dtype=None):
    """An earlier comparison table ``file`` (None without one; ``dtype`` as in ``pd.read_csv``),
    read before a comparison starts so a corrupt file stops it at once."""
    import pandas as pd
    if not file.is_file():
        return None
    try:
        earlier = pd.read_csv(file, dtype=dtype)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{file} is not a comparison table ({type(exc).__name__}); move it away or pass --out") \
            from None
    if "experiment" not in earlier.columns:
        raise UserError(f"{file} is not a comparison table (no experiment column); move it away or pass --out")
    return earlier


def _merged(kept, table):
    """``table`` with the ``kept`` rows of other experiments, in experiment order; kept rows
    lacking some of ``table``'s columns get them empty, kept rows of other columns (a table of
    another version) are dropped."""
    import pandas as pd
    if kept is None or not len(kept) or not set(kept.columns) <= set(table.columns):
        return kept if kept is not None and len(kept) and table.empty else table
    kept = kept.reindex(columns=table.columns)
    return pd.concat([kept, table], ignore_index=True).sort_values("experiment", kind="stable", ignore_index=True)


if __name__ == "__main__":
    sys.exit(main())
