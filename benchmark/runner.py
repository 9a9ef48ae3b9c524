"""Run regimes x seeds on one set of clients and collect what a leaderboard needs."""

from __future__ import annotations

import dataclasses
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmark.regimes import Regime
from fedmtl import Client, DivergedError, Federation, LayerSpec, LayerSpecError, Simulation, TrainConfig, mlp, partition

__all__ = [
    "Workload", "Task", "execute", "RunResult", "RegimeSummary", "run_regime", "run_suite", "summarize_runs",
    "pool_clients", "check_regimes", "layer_spec",
]


@dataclass(frozen=True)
class Workload:
    """A suite's data and model shape: the clients (one task each) and the MLP widths, input to output."""

    name: str
    clients: tuple[Client, ...]
    sizes: tuple[int, ...]
    base: TrainConfig
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # regime -> TrainConfig changes
    checkpoints: str | None = None  # directory for per-run checkpoints: a killed suite resumes where it stopped

    def config_for(self, regime: Regime, seed: int) -> TrainConfig:
        changes = {"seed": seed, "phases": regime.local_phases(self.base.local_epochs), **regime.extra}
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
        return [_std(list(v)) for v in zip(*(r.curve for r in self.runs), strict=True)]


def pool_clients(clients: Sequence[Client]) -> Client:
    """All clients' data as one client: the centralised regimes train on this."""
    cat = torch.cat
    return Client("pooled", "pooled", cat([c.x_train for c in clients]), cat([c.y_train for c in clients]),
                  cat([c.x_test for c in clients]), cat([c.y_test for c in clients]))


def layer_spec(regime: Regime, n_layers: int) -> LayerSpec:
    return LayerSpec({f"fc{i + 1}": t for i, t in enumerate(regime.layer_types(n_layers))})


def check_regimes(workload: Workload, regimes: Sequence[Regime]) -> None:
    """Validate every regime's layer spec against the model before anything trains (fail fast, write nothing)."""
    n_layers = len(workload.sizes) - 1
    for regime in regimes:
        if len(regime.layer_types(n_layers)) > n_layers:
            raise LayerSpecError(f"regime {regime.name!r} types {len(regime.layer_types(n_layers))} layers but the "
                                 f"model has {n_layers} (fc1..fc{n_layers})")
        partition(mlp(workload.sizes), layer_spec(regime, n_layers))


def run_regime(workload: Workload, regime: Regime, seed: int, *, progress: bool = False,
               tolerate_divergence: bool = False) -> RunResult:
    """Train one regime with one seed. A diverging run raises, or with ``tolerate_divergence`` (grid points)
    comes back with NaN accuracy so a too-large learning rate loses the grid instead of ending it."""
    config = workload.config_for(regime, seed)
    model = mlp(workload.sizes, seed=seed)
    federation = Federation(workload.clients)
    trained_on = Federation([pool_clients(workload.clients)]) if regime.pooled else federation
    start = time.perf_counter()
    checkpoint_dir = Path(workload.checkpoints) / f"{regime.name}-seed{seed}" if workload.checkpoints else None
    sim = Simulation(model, layer_spec(regime, len(workload.sizes) - 1), trained_on, config,
                     checkpoint_dir=checkpoint_dir)
    try:
        history = sim.run(progress=progress, desc=f"{regime.name} s{seed}")
    except DivergedError as exc:
        if not tolerate_divergence:
            raise DivergedError(f"regime {regime.name!r}, seed {seed}: {exc}") from None
        nan = float("nan")
        history = [*sim.history, {"accuracy": nan, "client_mean_accuracy": nan, "per_task": {}}]
        return RunResult(regime.name, seed, nan, nan, [h["accuracy"] for h in history], {},
                         time.perf_counter() - start, {"regime": regime.name, "diverged": True, **config.to_dict()})
    final = sim.evaluate_on(federation, "pooled") if regime.pooled else history[-1]
    return RunResult(
        regime=regime.name, seed=seed, accuracy=final["accuracy"],
        client_mean_accuracy=final["client_mean_accuracy"], curve=[h["accuracy"] for h in history],
        per_task=final["per_task"], seconds=time.perf_counter() - start,
        config={"regime": regime.name, "layers": list(regime.layer_types(len(workload.sizes) - 1)),
                "pooled": regime.pooled, "model": list(workload.sizes), **config.to_dict()},
    )


def _std(values: list[float]) -> float:
    """Sample standard deviation over seeds (0 for a single seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize_runs(runs: list[RunResult]) -> RegimeSummary:
    accs = [r.accuracy for r in runs]
    cms = [r.client_mean_accuracy for r in runs]
    config = {k: v for k, v in runs[0].config.items() if k != "seed"}
    config["seeds"] = [r.seed for r in runs]
    return RegimeSummary(
        regime=runs[0].regime, accuracy=statistics.fmean(accs), std=_std(accs),
        client_mean_accuracy=statistics.fmean(cms), client_mean_std=_std(cms), seeds=len(runs),
        seconds=sum(r.seconds for r in runs), config=config, runs=runs,
    )


_WORKER_WORKLOAD: Workload | None = None


@dataclass(frozen=True)
class Task:
    """One training run: a regime, a seed and optional config changes (a grid point)."""

    regime: Regime
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()
    tolerate_divergence: bool = False


def _run_task(workload: Workload, task: Task) -> RunResult:
    if task.overrides:
        name = task.regime.name
        merged = {**workload.overrides.get(name, {}), **dict(task.overrides)}
        workload = dataclasses.replace(workload, overrides={**workload.overrides, name: merged})
    return run_regime(workload, task.regime, task.seed, tolerate_divergence=task.tolerate_divergence)


def _init_worker(workload: Workload, threads: int) -> None:
    global _WORKER_WORKLOAD
    torch.set_num_threads(threads)
    _WORKER_WORKLOAD = workload


def _run_in_worker(task: Task) -> RunResult:
    assert _WORKER_WORKLOAD is not None
    return _run_task(_WORKER_WORKLOAD, task)


def execute(workload: Workload, tasks: Sequence[Task], *, jobs: int = 1, progress: bool = True,
            desc: str | None = None) -> list[RunResult]:
    """Run tasks, ``jobs`` at a time in separate processes; results come back in task order.

    Runs are independent, so running them side by side (one torch thread each) uses the cores without the
    contention that intra-op threading of small matmuls suffers; results do not depend on ``jobs``.
    """
    results: dict[int, RunResult] = {}
    with tqdm(total=len(tasks), desc=desc or workload.name, disable=not progress) as bar:
        if jobs <= 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                bar.set_postfix(regime=task.regime.name, seed=task.seed)
                results[i] = _run_task(workload, task)
                bar.update(1)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=context, initializer=_init_worker,
                                     initargs=(workload, workload.base.threads or 1)) as pool:
                futures = {pool.submit(_run_in_worker, task): i for i, task in enumerate(tasks)}
                for future in as_completed(futures):
                    i = futures[future]
                    results[i] = future.result()
                    bar.set_postfix(done=f"{tasks[i].regime.name} s{tasks[i].seed}")
                    bar.update(1)
    return [results[i] for i in range(len(tasks))]


def run_suite(workload: Workload, regimes: Sequence[Regime], seeds: Sequence[int], *, jobs: int = 1,
              progress: bool = True) -> list[RegimeSummary]:
    """Every regime with every seed, summarised per regime (mean and std over seeds)."""
    tasks = [Task(r, seed) for r in regimes for seed in seeds]
    runs = execute(workload, tasks, jobs=jobs, progress=progress)
    return [summarize_runs([run for run in runs if run.regime == r.name]) for r in regimes]
