"""Defaults for the parts of a :class:`~benchmark.suite.Suite` most suites share: a new suite subclasses
:class:`SuiteBase` and overrides what differs (at least its name, regimes, flags, workload and leaderboard)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from benchmark.regimes import Regime
from benchmark.runner import RegimeSummary, run_suite
from benchmark.suite import Workload
from fedmtl import TrainConfig

__all__ = ["SuiteBase"]


class SuiteBase:
    """Defaults for the parts of :class:`Suite` most suites share; a suite overrides what differs."""

    name = ""
    summary = ""
    regimes: Mapping[str, Regime] = {}
    default_regimes: tuple[str, ...] = ()
    default_train = TrainConfig()
    default_jobs = 1
    grid_lrs: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        return None

    def grid_points(self, regime: Regime, args: argparse.Namespace, lrs: Sequence[float],
                    validation: Workload) -> list[dict[str, Any]]:
        return [{"lr": float(lr)} for lr in lrs]

    def train(self, args: argparse.Namespace, workload: Workload, regimes: Sequence[Regime], seeds: Sequence[int], *,
              jobs: int, progress: bool) -> list[RegimeSummary]:
        """Train every regime with every seed: the one runner (a suite with another engine overrides this)."""
        return run_suite(workload, regimes, seeds, jobs=jobs, progress=progress, checkpoints=args.checkpoints,
                         batch_runs=getattr(args, "batch", 1))
