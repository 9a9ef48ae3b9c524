"""Hyper-parameter grids as the paper describes them: a multiplicative learning-rate grid (and batch sizes),
scored on a validation split carved from the training data so test data never picks a setting."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

from benchmark.regimes import Regime
from benchmark.runner import Task, Workload, execute

__all__ = ["grid_search"]


def grid_search(validation: Workload, regimes: Sequence[Regime], *, lrs: Sequence[float],
                batch_sizes: Sequence[int], seeds: Sequence[int] = (0,), jobs: int = 1,
                progress: bool = True) -> dict[str, dict[str, Any]]:
    """Best (lr, batch size) per regime by mean validation accuracy at the final round over ``seeds``.

    A point that diverges for any seed scores NaN and cannot win: a learning rate at the edge of stability
    that survives one seed can still blow up on the next. Every grid point is kept in the result.
    """
    points = [(r, float(lr), int(b)) for r in regimes for b in batch_sizes for lr in lrs]
    tasks = [Task(r, seed, (("lr", lr), ("batch_size", b)), tolerate_divergence=True)
             for r, lr, b in points for seed in seeds]
    validation = dataclasses.replace(validation, checkpoints=None)  # grid points differ only in lr/batch
    runs = iter(execute(validation, tasks, jobs=jobs, progress=progress, desc="grid"))
    out: dict[str, dict[str, Any]] = {}
    for regime, lr, batch in points:
        accs = [next(runs).accuracy for _ in seeds]
        point = {"lr": lr, "batch_size": batch, "val_accuracy": statistics.fmean(accs), "per_seed": accs}
        entry = out.setdefault(regime.name, {"grid": []})
        entry["grid"].append(point)
    for entry in out.values():
        best = max(entry["grid"], key=lambda p: -math.inf if math.isnan(p["val_accuracy"]) else p["val_accuracy"])
        entry.update({k: best[k] for k in ("lr", "batch_size", "val_accuracy")})
    return out
