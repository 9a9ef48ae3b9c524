"""Hyper-parameter grids as the paper describes them (a multiplicative learning-rate grid, and what else a suite
tunes), scored on a validation split carved from the training data so test data never picks a setting."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from benchmark.regimes import Regime
from benchmark.runner import Task, execute
from benchmark.suite import Workload

__all__ = ["grid_search"]


def grid_search(validation: Workload, regimes: Sequence[Regime], points: Callable[[Regime], list[dict[str, Any]]],
                *, seeds: Sequence[int] = (0,), jobs: int = 1, progress: bool = True,
                batch_runs: int | None = 1) -> dict[str, dict[str, Any]]:
    """The best point (TrainConfig changes) per regime by the validation score at the final round, mean over
    ``seeds`` (the workload's headline: accuracy for HAR, the mean over tasks for faces).

    A point that diverges for any seed scores NaN and cannot win: a learning rate at the edge of stability
    that survives one seed can still blow up on the next. Every grid point is kept in the result:
    ``{regime: {"grid": [{**point, "val_accuracy", "per_seed"}], "best": point, "val_accuracy": x}}``.
    """
    plan = [(r, point) for r in regimes for point in points(r)]
    tasks = [Task(r, seed, tuple(sorted(point.items()))) for r, point in plan for seed in seeds]
    runs = iter(execute(validation, tasks, jobs=jobs, progress=progress, desc="grid", batch_runs=batch_runs))
    out: dict[str, dict[str, Any]] = {}
    for regime, point in plan:
        scores = [next(runs).value(validation.headline) for _ in seeds]
        entry = out.setdefault(regime.name, {"grid": []})
        entry["grid"].append({**point, "val_accuracy": statistics.fmean(scores), "per_seed": scores})
    for entry in out.values():
        best = max(entry["grid"], key=lambda p: -math.inf if math.isnan(p["val_accuracy"]) else p["val_accuracy"])
        entry["best"] = {k: v for k, v in best.items() if k not in ("val_accuracy", "per_seed")}
        entry["val_accuracy"] = best["val_accuracy"]
    return out
