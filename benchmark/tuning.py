"""Hyper-parameter grids as the paper describes them: a multiplicative learning-rate grid (and batch sizes),
scored on a validation split carved from the training data so test data never picks a setting."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from benchmark.regimes import Regime
from benchmark.runner import Task, Workload, execute

__all__ = ["grid_search"]


def grid_search(validation: Workload, regimes: Sequence[Regime], *, lrs: Sequence[float],
                batch_sizes: Sequence[int], seed: int = 0, jobs: int = 1,
                progress: bool = True) -> dict[str, dict[str, Any]]:
    """Best (lr, batch size) per regime by validation accuracy at the final round; every grid point kept."""
    tasks = [Task(r, seed, (("lr", float(lr)), ("batch_size", int(b))), tolerate_divergence=True)
             for r in regimes for b in batch_sizes for lr in lrs]
    validation = dataclasses.replace(validation, checkpoints=None)  # grid points differ only in lr/batch
    runs = execute(validation, tasks, jobs=jobs, progress=progress, desc="grid")
    out: dict[str, dict[str, Any]] = {}
    for regime in regimes:
        points = [{**dict(t.overrides), "val_accuracy": run.accuracy}
                  for t, run in zip(tasks, runs, strict=True) if t.regime.name == regime.name]
        best = max(points, key=lambda p: -math.inf if math.isnan(p["val_accuracy"]) else p["val_accuracy"])
        out[regime.name] = {**best, "grid": points}
    return out
