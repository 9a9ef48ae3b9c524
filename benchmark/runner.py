"""Run regimes x seeds on one set of clients and collect what a leaderboard needs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmark.regimes import Regime
from fedmtl import Client, Federation, LayerSpec, Simulation, TrainConfig, mlp

__all__ = ["Workload", "RunResult", "RegimeSummary", "run_regime", "run_suite", "summarize_runs", "pool_clients"]


@dataclass(frozen=True)
class Workload:
    """A suite's data and model shape: the clients (one task each) and the MLP widths, input to output."""

    name: str
    clients: tuple[Client, ...]
    sizes: tuple[int, ...]
    base: TrainConfig
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # regime -> TrainConfig changes

    def config_for(self, regime: Regime, seed: int) -> TrainConfig:
        changes = {"seed": seed, "phases": regime.local_phases(self.base.local_epochs)}
        changes.update(self.overrides.get(regime.name, {}))
        return self.base.replace(**changes)


@dataclass
class RunResult:
    regime: str
    seed: int
    accuracy: float
    client_mean_accuracy: float
    curve: list[float]
    per_task: dict[str, float]
    seconds: float
    config: dict[str, Any]


@dataclass
class RegimeSummary:
    regime: str
    accuracy: float
    std: float
    client_mean_accuracy: float
    client_mean_std: float
    seeds: int
    seconds: float
    config: dict[str, Any]
    runs: list[RunResult]

    def curve_mean(self) -> list[float]:
        return [statistics.fmean(v) for v in zip(*(r.curve for r in self.runs), strict=True)]

    def curve_std(self) -> list[float]:
        return [statistics.pstdev(v) for v in zip(*(r.curve for r in self.runs), strict=True)]


def pool_clients(clients: Sequence[Client]) -> Client:
    """All clients' data as one client: the centralised regimes train on this."""
    cat = torch.cat
    return Client("pooled", "pooled", cat([c.x_train for c in clients]), cat([c.y_train for c in clients]),
                  cat([c.x_test for c in clients]), cat([c.y_test for c in clients]))


def layer_spec(regime: Regime, n_layers: int) -> LayerSpec:
    return LayerSpec({f"fc{i + 1}": t for i, t in enumerate(regime.layer_types(n_layers))})


def run_regime(workload: Workload, regime: Regime, seed: int, *, progress: bool = False) -> RunResult:
    config = workload.config_for(regime, seed)
    model = mlp(workload.sizes, seed=seed)
    federation = Federation(workload.clients)
    trained_on = Federation([pool_clients(workload.clients)]) if regime.pooled else federation
    start = time.perf_counter()
    sim = Simulation(model, layer_spec(regime, len(workload.sizes) - 1), trained_on, config)
    history = sim.run(progress=progress, desc=f"{regime.name} s{seed}")
    final = sim.evaluate_on(federation, "pooled") if regime.pooled else history[-1]
    return RunResult(
        regime=regime.name, seed=seed, accuracy=final["accuracy"],
        client_mean_accuracy=final["client_mean_accuracy"], curve=[h["accuracy"] for h in history],
        per_task=final["per_task"], seconds=time.perf_counter() - start,
        config={"regime": regime.name, "layers": list(regime.layer_types(len(workload.sizes) - 1)),
                "pooled": regime.pooled, "model": list(workload.sizes), **config.to_dict()},
    )


def summarize_runs(runs: list[RunResult]) -> RegimeSummary:
    accs = [r.accuracy for r in runs]
    cms = [r.client_mean_accuracy for r in runs]
    config = {k: v for k, v in runs[0].config.items() if k != "seed"}
    config["seeds"] = [r.seed for r in runs]
    return RegimeSummary(
        regime=runs[0].regime, accuracy=statistics.fmean(accs), std=statistics.pstdev(accs),
        client_mean_accuracy=statistics.fmean(cms), client_mean_std=statistics.pstdev(cms), seeds=len(runs),
        seconds=sum(r.seconds for r in runs), config=config, runs=runs,
    )


def run_suite(workload: Workload, regimes: Sequence[Regime], seeds: Sequence[int], *,
              progress: bool = True) -> list[RegimeSummary]:
    """Every regime with every seed; a progress bar over runs and one over each run's rounds."""
    summaries = []
    with tqdm(total=len(regimes) * len(seeds), desc=workload.name, disable=not progress) as bar:
        for regime in regimes:
            runs = []
            for seed in seeds:
                bar.set_postfix(regime=regime.name, seed=seed)
                runs.append(run_regime(workload, regime, seed, progress=progress))
                bar.update(1)
            summaries.append(summarize_runs(runs))
    return summaries
