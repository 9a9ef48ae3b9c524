"""``python -m benchmark``: run a suite's regimes and print/write its leaderboard.

Subcommands: ``run`` (the default) and ``list``. ``--suite`` picks the suite (default ``har``); each suite adds
its own flags, and a flag of another suite is an error rather than silently ignored. Every input is validated
before any training starts, and results are written only once every run has finished, so a bad flag or a crash
writes nothing (with ``--checkpoints``, a rerun resumes where the killed one stopped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from benchmark.memory import available_memory, parse_size
from benchmark.regimes import custom_regime, get_regimes
from benchmark.suites import DEFAULT_SUITE, all_suites, get_suite
from fedmtl.cliargs import positive_int
from fedmtl.config import TrainConfig, load_config
from fedmtl.errors import ConfigError, FedMTLError

__all__ = ["main", "build_parser"]

DEVICES = ("auto", "cpu", "cuda")


class _Parser(argparse.ArgumentParser):
    """Bad flags are one ``error:`` line and exit status 2, as every other bad input."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{' '.join(message.split())} (see python -m benchmark run --help)")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} must list positive numbers")
    return values


def _epilog() -> str:
    lines = ["suites (--suite NAME; `python -m benchmark --suite NAME --help` shows its flags):"]
    for suite in all_suites().values():
        default = " [default]" if suite.name == DEFAULT_SUITE else ""
        lines.append(f"  {suite.name}{default}: {suite.summary}")
        lines.append("    regimes: " + ", ".join(
            f"{name}{'*' if name in suite.default_regimes else ''}" for name in suite.regimes))
    lines += ["  (* = run by --regimes all)", "", "`python -m benchmark list` describes every regime."]
    return "\n".join(lines)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default=DEFAULT_SUITE, help=f"suite to run (default {DEFAULT_SUITE}; see below)")
    parser.add_argument("--regimes", default="all", help="comma list of regimes (default: the suite's `all`)")
    parser.add_argument("--layers", metavar="TYPES",
                        help="add a 'custom' regime: layer types bottom to top, e.g. common,common,task,personal")
    parser.add_argument("--seeds", type=positive_int, default=3, help="number of seeds (0..N-1), default 3")
    parser.add_argument("--rounds", type=positive_int, help="override the number of rounds")
    parser.add_argument("--config", metavar="TOML",
                        help="training config file (fedmtl.TrainConfig keys); replaces the suite's per-regime "
                             "defaults")
    parser.add_argument("--aggregator", metavar="NAME", help="aggregator for common and task layers (e.g. fedadam)")
    parser.add_argument("--threads", type=positive_int, help="torch threads per run (HAR default 1; faces: all)")
    parser.add_argument("--jobs", type=positive_int,
                        help="runs side by side in separate processes (HAR default min(2, cores), faces 1); capped "
                             "so that their estimated memory fits the memory budget")
    parser.add_argument("--batch-runs", type=positive_int, metavar="N",
                        help="compatible runs (seeds, regimes, grid points) trained together as one stacked "
                             "computation, at most N per process (default: as many as the memory budget holds; "
                             "1 trains each run alone); results are the same either way")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where training (and, for faces, feature extraction) runs (default cpu)")
    parser.add_argument("--memory-budget", type=parse_size, metavar="SIZE",
                        help="memory for the whole suite, e.g. 4G (default: what the machine has free); caps --jobs "
                             "and is each run's TrainConfig.memory_budget")
    parser.add_argument("--grid", action="store_true", help="tune per regime on a validation split first")
    parser.add_argument("--grid-lrs", type=_floats, help="learning rates for --grid (default: the suite's)")
    parser.add_argument("--grid-seeds", type=positive_int, default=2, help="seeds per grid point (default 2)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (3 rounds, 1 seed, 1 epoch)")
    parser.add_argument("--out", default="results", help="output directory (default: results)")
    parser.add_argument("--checkpoints", metavar="DIR",
                        help="checkpoint every run after each round under DIR; rerunning resumes a killed suite")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser(suite_name: str = DEFAULT_SUITE) -> argparse.ArgumentParser:
    """The ``run`` flags: the common ones and those of ``suite_name``."""
    suite = get_suite(suite_name)
    parser = _Parser(prog="python -m benchmark [run]", description=__doc__.splitlines()[0], allow_abbrev=False,
                     epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_arguments(parser)
    suite.add_arguments(parser.add_argument_group(f"{suite.name} suite (--suite {suite.name})"))
    return parser


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def _suite_from(argv: Sequence[str]) -> str:
    for i, token in enumerate(argv):
        if token == "--suite" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--suite="):
            return token.split("=", 1)[1]
    return DEFAULT_SUITE


def _refuse_foreign_flags(argv: Sequence[str], suite_name: str) -> None:
    """A flag that only another suite has is an error naming that suite, never silently ignored."""
    own = _options(build_parser(suite_name))
    owners: dict[str, list[str]] = {}
    for name in all_suites():
        if name != suite_name:
            for opt in _options(build_parser(name)) - own:
                owners.setdefault(opt, []).append(name)
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag in owners:
            suites = " or ".join(f"--suite {n}" for n in owners[flag])
            raise ConfigError(f"{flag} is a flag of the {', '.join(owners[flag])} suite, not of {suite_name} "
                              f"(run it with {suites})")


def _train_config(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    changes: dict[str, Any] = {"device": args.device}
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
    from benchmark.runner import jobs_within, runs_within
    from benchmark.tuning import grid_search
    from fedmtl.files import atomic_write

    suite = get_suite(args.suite)
    args.memo = {}  # lives for this invocation: what a suite's validation workload may reuse
    regimes = get_regimes(args.regimes, suite.regimes, [suite.regimes[n] for n in suite.default_regimes],
                          suite=suite.name)
    if args.layers:
        regimes.append(custom_regime(args.layers))
    requested = args.jobs or suite.default_jobs
    budget = args.memory_budget
    train = _train_config(args, suite.default_train)
    train.resolved_device()  # --device cuda without a CUDA device: one error line now, not after data loading
    seeds = list(range(1 if args.quick else args.seeds))
    progress = not args.no_progress
    if getattr(args, "engine", "simulation") != "simulation" and args.batch_runs is not None:
        raise ConfigError(f"--batch-runs applies to the in-process runner, not --engine {args.engine}")
    start = time.perf_counter()
    workload = suite.workload(args, train, regimes, progress=progress)
    jobs = jobs_within(requested, workload.data.run_bytes(), budget if budget is not None else available_memory())
    if jobs < requested and args.jobs:
        print(f"note: --jobs {requested} lowered to {jobs}: one run needs about "
              f"{workload.data.run_bytes() / 2**30:.1f} GiB", file=sys.stderr)
    if args.threads is None and jobs > 1 and (workload.base.threads or 1) > 1:  # side by side: share the cores
        threads = max(1, (workload.base.threads or 1) // jobs)
        workload = dataclasses.replace(workload, base=workload.base.replace(threads=threads))
    total = budget if budget is not None else available_memory()
    args.batch = runs_within(args.batch_runs, workload.data.run_bytes(), None if total is None else total // jobs)
    if args.batch_runs and args.batch is not None and args.batch < args.batch_runs:
        print(f"note: --batch-runs {args.batch_runs} lowered to {args.batch}: one run needs about "
              f"{workload.data.run_bytes() / 2**30:.1f} GiB", file=sys.stderr)
    if budget is not None:  # each run gets its share of the budget
        per_job = max(1, math.ceil(len(regimes) * len(seeds) / jobs))  # runs one process trains together
        together = min(args.batch or per_job, per_job)
        share = budget // (jobs * together)
        workload = dataclasses.replace(workload, base=workload.base.replace(memory_budget=share))
    tuning: dict[str, Any] = {}
    if args.grid:
        validation = suite.workload(args, workload.base, regimes, validation=True, progress=progress)
        lrs = args.grid_lrs or suite.grid_lrs
        tuning = grid_search(validation, regimes, lambda r: suite.grid_points(r, args, lrs, validation),
                             seeds=range(args.grid_seeds), jobs=jobs, progress=progress, batch_runs=args.batch)
        # written now, not with the leaderboard: the grid is the expensive part and must survive a failed run
        atomic_write(Path(args.out) / suite.name / "grid.json", (json.dumps(tuning, indent=2) + "\n").encode())
        overrides = {**workload.overrides}
        for name, entry in tuning.items():
            overrides[name] = {**overrides.get(name, {}), **entry["best"]}
        workload = dataclasses.replace(workload, overrides=overrides)
    summaries = suite.train(args, workload, regimes, seeds, jobs=jobs, progress=progress)
    meta = {**workload.data.meta(), "wall_s": round(time.perf_counter() - start, 1)}
    text, files = suite.leaderboard(summaries, meta)
    out = Path(args.out) / suite.name
    for name, data in files.items():  # every file rendered before the first is written
        atomic_write(out / name, data)
    print(text)
    diverged = [f"{s.regime} seed {r.seed} ({r.diverged})" for s in summaries for r in s.runs if r.diverged]
    if diverged:
        print(f"note: {len(diverged)} run(s) diverged and are marked in the leaderboard: " + "; ".join(diverged),
              file=sys.stderr)
    print("wrote " + ", ".join(str(out / name) for name in files if name.startswith("leaderboard")
                               or name == "curves.png"))
    return 0


def _list() -> int:
    print("suites: " + ", ".join(all_suites()))
    for suite in all_suites().values():
        print(f"{suite.name} regimes (--suite {suite.name}):")
        for r in suite.regimes.values():
            print(f"  {r.name:<20} {'[paper] ' if r.paper else ''}{r.summary}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if argv[:1] == ["list"]:
            return _list()
        if argv[:1] == ["run"]:
            argv = argv[1:]
        name = _suite_from(argv)
        get_suite(name)
        _refuse_foreign_flags(argv, name)
        args = build_parser(name).parse_args(argv)
        return _run(args)
    except FedMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
