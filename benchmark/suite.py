"""The Suite protocol: what a benchmark suite supplies so that one runner and one command line serve them all.

A suite knows its data, its regimes, what a run's score is and how its leaderboard looks; the runner
(:mod:`benchmark.runner`) knows how to train runs round by round, checkpoint, resume, run them side by side and
record a diverging one. A new suite is one module under ``benchmark/suites/`` that defines ``SUITE``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from benchmark.regimes import Regime
from fedmtl import Simulation, TrainConfig

if TYPE_CHECKING:
    from benchmark.runner import RegimeSummary

__all__ = ["RunPlan", "SuiteData", "Workload", "Suite"]

Score = dict[str, float]


@dataclass(frozen=True)
class RunPlan:
    """One run as the runner drives it: named simulations trained in lockstep, one round at a time.

    Most runs have one part (named ``""``); a row may need several models (the face suite's
    ``centralized_separate`` trains one per task). ``build(part, checkpoint_dir)`` makes a part's simulation,
    resuming from the directory's checkpoint when there is one; ``score(sims)`` scores the parts after an
    evaluated round (the round's history entry is already in each part's ``history``).
    """

    parts: tuple[str, ...]
    build: Callable[[str, Path | None], Simulation]
    score: Callable[[Mapping[str, Simulation]], Score]
    config: TrainConfig
    row: dict[str, Any]  # what the leaderboard records about the run besides its TrainConfig


class SuiteData(Protocol):
    """A suite's data, built once per invocation: what every run of the suite trains on."""

    def check(self, regimes: Sequence[Regime]) -> None:
        """Fail (one ``FedMTLError``) before anything trains if a regime does not fit the model."""

    def plan(self, regime: Regime, config: TrainConfig) -> RunPlan:
        """The simulations of one run of ``regime`` with ``config`` (its seed included)."""

    def run_bytes(self) -> int:
        """Estimated peak memory of one run in bytes: how many runs fit side by side."""

    def meta(self) -> dict[str, Any]:
        """What the leaderboard header says about the data (a ``notes`` list is printed as sentences)."""


@dataclass(frozen=True)
class Workload:
    """A suite's data plus the training settings every run starts from (``base``, then per-regime changes)."""

    name: str
    data: Any  # a SuiteData
    base: TrainConfig
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # regime -> TrainConfig changes
    headline: str = "accuracy"  # the score key progress bars show and leaderboards rank by

    def config_for(self, regime: Regime, seed: int, changes: Mapping[str, Any] | None = None) -> TrainConfig:
        """Base settings, then the regime's own (phases, extras), the suite's per-regime tuned values, then
        ``changes`` (a grid point)."""
        merged: dict[str, Any] = {"seed": seed, "phases": regime.local_phases(self.base.local_epochs),
                                  **regime.extra, **self.overrides.get(regime.name, {}), **(changes or {})}
        if "local_epochs" in merged and regime.phases:
            merged["phases"] = regime.local_phases(merged["local_epochs"])
        return self.base.replace(**merged)

    def plan(self, regime: Regime, seed: int, changes: Mapping[str, Any] | None = None) -> RunPlan:
        return self.data.plan(regime, self.config_for(regime, seed, changes))


class Suite(Protocol):
    """One benchmark suite: its flags, data, regimes, grid and leaderboard."""

    name: str
    summary: str  # one line for ``--help`` and ``list``
    regimes: Mapping[str, Regime]  # every regime it can run
    default_regimes: tuple[str, ...]  # what ``--regimes all`` means
    default_train: TrainConfig
    default_jobs: int  # runs side by side unless --jobs says otherwise (still capped by memory)
    grid_lrs: tuple[float, ...]  # the learning rates --grid tries unless --grid-lrs says otherwise

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        """The suite's own flags; a flag of another suite is an error, never silently ignored."""

    def workload(self, args: argparse.Namespace, train: TrainConfig, regimes: Sequence[Regime], *,
                 validation: bool = False, progress: bool = True) -> Workload:
        """Validate the suite's flags and the regimes against its model, then build its data (``validation``:
        the test split replaced by a held-out part of the training data, for grids). ``args.memo`` is a dict that
        lives for one invocation: what the validation workload may reuse of the first (loaded data)."""

    def grid_points(self, regime: Regime, args: argparse.Namespace, lrs: Sequence[float],
                    validation: Workload) -> list[dict[str, Any]]:
        """The TrainConfig changes --grid tries for ``regime``."""

    def train(self, args: argparse.Namespace, workload: Workload, regimes: Sequence[Regime], seeds: Sequence[int], *,
              jobs: int, progress: bool) -> list[RegimeSummary]:
        """Every regime with every seed, one row each (:class:`~benchmark.suite_base.SuiteBase`: the one runner)."""

    def leaderboard(self, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
        """The terminal table and the files (name -> bytes) written under ``<out>/<suite>/``."""

