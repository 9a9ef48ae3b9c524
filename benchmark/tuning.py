"""Hyper-parameter grids as the paper describes them: a multiplicative learning-rate grid (and batch sizes),
scored on a validation split carved from the training data so test data never picks a setting."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from benchmark.regimes import Regime
from benchmark.runner import Workload, run_regime

__all__ = ["grid_search"]


def grid_search(validation: Workload, regimes: Sequence[Regime], *, lrs: Sequence[float],
                batch_sizes: Sequence[int], seed: int = 0, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Best (lr, batch size) per regime by validation accuracy at the final round; every grid point kept."""
    out: dict[str, dict[str, Any]] = {}
    total = len(regimes) * len(lrs) * len(batch_sizes)
    with tqdm(total=total, desc="grid", disable=not progress) as bar:
        for regime in regimes:
            points = []
            for batch in batch_sizes:
                for lr in lrs:
                    overrides = {**validation.overrides.get(regime.name, {}), "lr": float(lr), "batch_size": batch}
                    workload = dataclasses.replace(validation, overrides={regime.name: overrides})
                    result = run_regime(workload, regime, seed)
                    points.append({"lr": float(lr), "batch_size": batch, "val_accuracy": result.accuracy})
                    bar.update(1)
            best = max(points, key=lambda p: p["val_accuracy"])
            out[regime.name] = {**best, "grid": points}
    return out
