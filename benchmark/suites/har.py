"""The HAR suite (paper section VI, Table IV) as a :class:`~benchmark.suite.Suite`: 30 subjects, one task each.

Its own flags: the train/test split, an original UCI HAR folder, the engine (``flower`` trains the federated
regimes on Flower's runtime instead of the in-process runner) and the batch sizes of ``--grid``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.har import DEFAULT_TRAIN, HarSuiteConfig, har_workload
from benchmark.leaderboard import har_files, to_markdown
from benchmark.regimes import REGIMES, Regime
from benchmark.runner import RegimeSummary
from benchmark.suite import Workload
from benchmark.suite_base import SuiteBase
from fedmtl import TrainConfig
from fedmtl.errors import ConfigError, FedMTLError

__all__ = ["HarSuite", "SUITE", "GRID_BATCHES"]

GRID_BATCHES = (32,)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(float(v)) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} must list positive integers")
    return values


class HarSuite(SuiteBase):
    name = "har"
    summary = "human activity recognition, 30 subjects as 30 tasks (paper Table IV; the default suite)"
    regimes = REGIMES
    default_regimes = tuple(REGIMES)
    default_train = DEFAULT_TRAIN
    default_jobs = min(2, os.cpu_count() or 1)

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--split", choices=("blocked", "random"), default="blocked", help="train/test split")
        group.add_argument("--uci-har", metavar="PATH",
                           help="use an original 'UCI HAR Dataset' folder (561 features)")
        group.add_argument("--engine", choices=("simulation", "flower"), default="simulation",
                           help="simulation: the in-process runner (default); flower: each run on Flower's "
                                "simulation runtime, one SuperNode per client (federated regimes only)")
        group.add_argument("--grid-batches", type=_ints, default=GRID_BATCHES, help="batch sizes for --grid")

    def workload(self, args: argparse.Namespace, train: TrainConfig, regimes: Sequence[Regime], *,
                 validation: bool = False, progress: bool = True) -> Workload:
        if args.uci_har and not Path(args.uci_har).is_dir():
            raise FedMTLError(f"UCI HAR path {args.uci_har} is not a directory")
        if args.engine == "flower" and args.checkpoints:
            raise ConfigError("--checkpoints is not supported with --engine flower (server-side checkpoints: not "
                              "yet)")
        defaults = HarSuiteConfig(split=args.split, uci_har_path=args.uci_har)
        # A config file states the training settings itself, so the shipped per-regime tuned values step aside.
        config = dataclasses.replace(defaults, train=train, overrides={} if args.config else defaults.overrides)
        workload = har_workload(config, validation=validation, progress=progress)
        workload = dataclasses.replace(workload, data=dataclasses.replace(
            workload.data, info={"engine": args.engine, **workload.data.info}))
        workload.data.check(regimes)
        if args.engine == "flower" and args.regimes != "all" and not validation:
            from benchmark.flower_runner import check_flower_regimes

            check_flower_regimes(regimes, workload)
        return workload

    def grid_points(self, regime: Regime, args: argparse.Namespace, lrs: Sequence[float],
                    validation: Workload) -> list[dict[str, Any]]:
        return [{"lr": float(lr), "batch_size": int(b)} for b in args.grid_batches for lr in lrs]

    def train(self, args: argparse.Namespace, workload: Workload, regimes: Sequence[Regime], seeds: Sequence[int], *,
              jobs: int, progress: bool) -> list[RegimeSummary]:
        if args.engine != "flower":
            return super().train(args, workload, regimes, seeds, jobs=jobs, progress=progress)
        from benchmark.flower_runner import check_flower_regimes, run_suite_flower

        if args.regimes == "all":  # the default: the regimes Flower can run, and a notice naming the rest
            kept = []
            for regime in regimes:
                try:
                    check_flower_regimes([regime], workload)
                    kept.append(regime)
                except ConfigError:
                    pass
            left = [r.name for r in regimes if r not in kept]
            if left:
                print(f"note: --engine flower runs the federated regimes; left out: {', '.join(left)}",
                      file=sys.stderr)
            regimes = kept
        return run_suite_flower(workload, regimes, seeds, split=args.split, uci_har=args.uci_har, layers=args.layers,
                                progress=progress)

    def leaderboard(self, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
        return to_markdown(self.name, summaries, meta), har_files(self.name, summaries, meta)


SUITE = HarSuite()
