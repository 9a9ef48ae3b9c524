"""``python -m benchmark``: run a suite's regimes and print/write its leaderboard.

Subcommands: ``run`` (the default) and ``list``. Every input is validated before any training starts, and
results are written only once every run has finished, so a bad flag or a crash writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.face_cli import add_face_arguments
from benchmark.regimes import REGIMES, custom_regime, get_regimes
from fedmtl.cliargs import OneLineParser, positive_int
from fedmtl.config import TrainConfig, load_config
from fedmtl.errors import ConfigError, FedMTLError

__all__ = ["main", "build_parser"]

SUITES = ("har", "faces")
GRID_LRS = (0.01, 0.02, 0.05, 0.1)
GRID_BATCHES = (32,)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers") from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a suite and write its leaderboard (default)")
    run.add_argument("--suite", default="har", help=f"suite to run ({', '.join(SUITES)})")
    run.add_argument("--regimes", default="all", help="comma list of regimes (default: all; see `list`)")
    run.add_argument("--layers", metavar="TYPES",
                     help="add a 'custom' regime: layer types bottom to top, e.g. common,common,task,personal")
    run.add_argument("--seeds", type=positive_int, default=3, help="number of seeds (0..N-1), default 3")
    run.add_argument("--rounds", type=positive_int, help="override the number of rounds")
    run.add_argument("--split", choices=("blocked", "random"), default="blocked", help="HAR train/test split")
    run.add_argument("--uci-har", metavar="PATH", help="use an original 'UCI HAR Dataset' folder (561 features)")
    run.add_argument("--config", metavar="TOML",
                     help="training config file (fedmtl.TrainConfig keys); replaces the tuned per-regime defaults")
    run.add_argument("--aggregator", metavar="NAME", help="aggregator for common and task layers (e.g. fedadam)")
    run.add_argument("--threads", type=positive_int, help="torch threads per run (default 1: see README)")
    run.add_argument("--jobs", type=positive_int, default=min(2, os.cpu_count() or 1),
                     help="runs in parallel processes (default: min(2, cores))")
    run.add_argument("--grid", action="store_true", help="tune lr (and batch) per regime on a validation split first")
    run.add_argument("--grid-lrs", type=_floats, default=GRID_LRS, help="learning rates for --grid")
    run.add_argument("--grid-batches", type=_floats, default=GRID_BATCHES, help="batch sizes for --grid")
    run.add_argument("--grid-seeds", type=positive_int, default=2, help="seeds per grid point (default 2)")
    run.add_argument("--quick", action="store_true", help="seconds-long smoke run (3 rounds, 1 seed, 1 epoch)")
    run.add_argument("--out", default="results", help="output directory (default: results)")
    run.add_argument("--checkpoints", metavar="DIR",
                     help="checkpoint every run after each round under DIR; rerunning resumes a killed suite")
    run.add_argument("--engine", choices=("simulation", "flower"), default="simulation",
                     help="simulation: the in-process engine (default); flower: each run on Flower's simulation "
                          "runtime, one SuperNode per client (federated regimes only)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_face_arguments(run)
    sub.add_parser("list", help="list suites and regimes")
    return parser


def _train_config(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    changes: dict[str, Any] = {}
    if args.config:
        base = load_config(args.config, base=base)
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.threads:
        changes["threads"] = args.threads
    if args.aggregator:
        changes["aggregators"] = {"common": {"name": args.aggregator}, "task": {"name": args.aggregator}}
    if args.quick:
        changes.update(rounds=min(args.rounds or 3, 3), local_epochs=1)
    return base.replace(**changes)


def _run(args: argparse.Namespace) -> int:
    from benchmark.har import HarSuiteConfig, har_workload
    from benchmark.leaderboard import to_markdown, write_leaderboard
    from benchmark.runner import check_regimes, run_suite
    from benchmark.tuning import grid_search
    from fedmtl.files import atomic_write

    if args.suite not in SUITES:
        raise ConfigError(f"suite {args.suite!r} is unknown (known: {', '.join(SUITES)})")
    if args.suite == "faces":
        from benchmark.face_cli import run_faces

        return run_faces(args)
    regimes = get_regimes(args.regimes)
    if args.layers:
        regimes.append(custom_regime(args.layers))
    if args.uci_har and not Path(args.uci_har).is_dir():
        raise FedMTLError(f"UCI HAR path {args.uci_har} is not a directory")
    defaults = HarSuiteConfig(split=args.split, uci_har_path=args.uci_har)
    # A config file states the training settings itself, so the shipped per-regime tuned values step aside.
    suite = dataclasses.replace(defaults, train=_train_config(args, defaults.train),
                                overrides={} if args.config else defaults.overrides)
    seeds = list(range(1 if args.quick else args.seeds))
    progress = not args.no_progress
    start = time.perf_counter()
    workload = har_workload(suite, progress=progress)
    check_regimes(workload, regimes)
    if args.engine == "flower":
        regimes = _flower_regimes(args, workload, regimes)
    if args.checkpoints:
        workload = dataclasses.replace(workload, checkpoints=args.checkpoints)
    tuning: dict[str, Any] = {}
    if args.grid:
        validation = har_workload(suite, validation=True, progress=progress)
        tuning = grid_search(validation, regimes, lrs=args.grid_lrs, batch_sizes=[int(b) for b in args.grid_batches],
                             seeds=range(args.grid_seeds), jobs=args.jobs, progress=progress)
        # written now, not with the leaderboard: the grid is the expensive part and must survive a failed run
        atomic_write(Path(args.out) / args.suite / "grid.json", (json.dumps(tuning, indent=2) + "\n").encode())
        workload = dataclasses.replace(workload, overrides={
            name: {"lr": best["lr"], "batch_size": best["batch_size"]} for name, best in tuning.items()})
    if args.engine == "flower":
        from benchmark.flower_runner import run_suite_flower

        summaries = run_suite_flower(workload, regimes, seeds, split=args.split, uci_har=args.uci_har,
                                     layers=args.layers, progress=progress)
    else:
        summaries = run_suite(workload, regimes, seeds, jobs=args.jobs, progress=progress)
    data = "UCI HAR " + args.uci_har if args.uci_har else "UCI HAPT raw (KCC2020 repack)"
    meta = {"engine": args.engine, "split": args.split, "data": data,
            "clients": len(workload.clients), "features": workload.sizes[0],
            "wall_s": round(time.perf_counter() - start, 1)}
    paths = write_leaderboard(args.out, args.suite, summaries, meta)
    print(to_markdown(args.suite, summaries, meta))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _flower_regimes(args: argparse.Namespace, workload: Any, regimes: list[Any]) -> list[Any]:
    """The regimes to run on Flower: with the default ``all``, the ones Flower can run (a notice names the rest);
    regimes named explicitly must all be runnable, or the run stops before anything trains."""
    from benchmark.flower_runner import check_flower_regimes

    if args.checkpoints:
        raise ConfigError("--checkpoints is not supported with --engine flower (server-side checkpoints: not yet)")
    if args.regimes == "all":
        kept = []
        for regime in regimes:
            try:
                check_flower_regimes([regime], workload)
                kept.append(regime)
            except ConfigError:
                pass
        left = [r.name for r in regimes if r not in kept]
        if left:
            print(f"note: --engine flower runs the federated regimes; left out: {', '.join(left)}", file=sys.stderr)
        return kept
    check_flower_regimes(regimes, workload)
    return regimes


def _list() -> int:
    print("suites: " + ", ".join(SUITES))
    print("regimes:")
    for r in REGIMES.values():
        print(f"  {r.name:<18} {'[paper] ' if r.paper else ''}{r.summary}")
    from benchmark.faces import FACE_REGIMES

    print("faces regimes (--suite faces):")
    for r in FACE_REGIMES.values():
        print(f"  {r.name:<20} {'[paper] ' if r.paper else ''}{r.summary}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return _list() if args.command == "list" else _run(args)
    except FedMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
