"""One runner for every suite: runs trained round by round, checkpointed, resumed, side by side, summarised.

A run is a regime, a seed and optional config changes (a grid point). The runner drives its simulations one
round at a time through ``Simulation.run(r)``, scores every evaluated round with the suite's score, and, with a
checkpoint directory, keeps each part's checkpoint and the scores so far (``scores.json``) after every round:
a suite killed at any point and run again resumes to the same rows. A run that diverges is recorded as such
(its row says so) and the other runs go on.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import queue
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmark.regimes import Regime
from benchmark.suite import Workload
from fedmtl import Client, DivergedError, LayerSpec, TrainConfig
from fedmtl.errors import CheckpointError
from fedmtl.files import atomic_write

__all__ = [
    "Task", "RunResult", "RegimeSummary", "run_task", "execute", "run_suite", "summarize_runs", "pool_clients",
    "layer_spec", "jobs_within", "SCORES_NAME",
]

SCORES_NAME = "scores.json"


@dataclass(frozen=True)
class Task:
    """One training run: a regime, a seed and optional config changes (a grid point)."""

    regime: Regime
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """The run's checkpoint folder name: ``<regime>-seed<n>`` (plus a digest of a grid point's changes)."""
        base = f"{self.regime.name}-seed{self.seed}"
        if not self.overrides:
            return base
        digest = hashlib.sha256(json.dumps(sorted(self.overrides), default=str).encode()).hexdigest()[:10]
        return f"{base}-{digest}"


@dataclass
class RunResult:
    """One run: its score after every evaluated round (``scores[i]`` after round ``rounds[i]``)."""

    regime: str
    seed: int
    rounds: list[int]
    scores: list[dict[str, float]]
    seconds: float
    config: dict[str, Any]
    diverged: str | None = None  # why, when the run diverged; its scores stop at the last good round

    @property
    def final(self) -> dict[str, float]:
        """The last round's score; empty for a run that diverged (its numbers are not a result)."""
        return {} if self.diverged or not self.scores else self.scores[-1]

    def value(self, key: str) -> float:
        return self.final.get(key, math.nan)

    def curve(self, key: str) -> list[float]:
        return [s[key] for s in self.scores]


def _std(values: list[float]) -> float:
    """Sample standard deviation over seeds (0 for a single seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class RegimeSummary:
    """One leaderboard row: every score key's mean and sample std over the seeds that finished."""

    regime: str
    mean: dict[str, float]
    std: dict[str, float]
    seeds: int  # seeds that finished
    diverged: list[int]  # seeds that diverged
    seconds: float
    config: dict[str, Any]
    runs: list[RunResult]

    @property
    def finished(self) -> list[RunResult]:
        return [r for r in self.runs if not r.diverged]

    def value(self, key: str) -> float:
        return self.mean.get(key, math.nan)

    def curve(self, key: str) -> tuple[list[int], list[float], list[float]]:
        """Rounds, mean and std over the finished seeds of one score key per evaluated round."""
        runs = self.finished
        if not runs:
            return [], [], []
        columns = list(zip(*(r.curve(key) for r in runs), strict=True))
        return runs[0].rounds, [statistics.fmean(v) for v in columns], [_std(list(v)) for v in columns]


def summarize_runs(runs: list[RunResult]) -> RegimeSummary:
    """Mean and std over seeds of every score key; diverged seeds are listed, not averaged."""
    finished = [r for r in runs if not r.diverged]
    keys = list(finished[0].final) if finished else []
    config = {k: v for k, v in runs[0].config.items() if k != "seed"}
    config["seeds"] = [r.seed for r in runs]
    return RegimeSummary(
        regime=runs[0].regime,
        mean={k: statistics.fmean(r.final[k] for r in finished) for k in keys},
        std={k: _std([r.final[k] for r in finished]) for k in keys},
        seeds=len(finished), diverged=[r.seed for r in runs if r.diverged],
        seconds=sum(r.seconds for r in runs), config=config, runs=runs,
    )


def pool_clients(clients: Sequence[Client]) -> Client:
    """All clients' data as one client: the centralised regimes train on this."""
    cat = torch.cat
    return Client("pooled", "pooled", cat([c.x_train for c in clients]), cat([c.y_train for c in clients]),
                  cat([c.x_test for c in clients]), cat([c.y_test for c in clients]))


def layer_spec(regime: Regime, n_layers: int) -> LayerSpec:
    return LayerSpec({f"fc{i + 1}": t for i, t in enumerate(regime.layer_types(n_layers))})


# ---------------------------------------------------------------------------------------------- one run
def _config_key(config: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in config.items() if k not in TrainConfig.RUN_ONLY}  # how, not what, a run computes
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_scores(path: Path, key: str) -> dict[str, Any]:
    if not path.exists():
        return {"config": key, "scores": {}}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); delete it to train the run again") from None
    if state.get("config") != key:
        raise CheckpointError(f"{path} was written by a different config; use a fresh --checkpoints directory")
    return state


def _save_scores(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(state, indent=1) + "\n").encode(), durable=True)


Reporter = Callable[[int, dict[str, float] | None], None]


def _evaluated_rounds(rounds: int, every: int) -> list[int]:
    """The rounds after which a run is scored: every ``every``-th, and the last."""
    return sorted({*range(every, rounds + 1, every), rounds})


def run_task(workload: Workload, task: Task, *, checkpoints: str | os.PathLike[str] | None = None,
             report: Reporter | None = None) -> RunResult:
    """Train one run round by round; ``report(round, score or None)`` for each round (a score where the round
    is evaluated: every ``eval_every`` rounds and the last).

    With ``checkpoints``, each part checkpoints under ``<checkpoints>/<task.key>[/<part>]`` and the scores so
    far go to ``scores.json`` beside them after every round (checkpoint first, then scores: a kill in between
    leaves a round whose score is recomputed from its checkpoint, which gives the same number).
    """
    plan = workload.plan(task.regime, task.seed, dict(task.overrides))
    config = plan.config
    row = {**plan.row, **config.to_dict()}
    run_dir = Path(checkpoints) / task.key if checkpoints is not None else None
    start = time.perf_counter()
    sims = {part: plan.build(part, None if run_dir is None else run_dir / part if part else run_dir)
            for part in plan.parts}
    score_path = run_dir / SCORES_NAME if run_dir is not None else None
    state = _load_scores(score_path, _config_key(row)) if score_path is not None else {"scores": {}}
    reached = min(sim.round_index for sim in sims.values())
    saved = {int(r): s for r, s in state["scores"].items() if int(r) <= reached}
    if state.get("diverged"):
        rounds = sorted(saved)
        return RunResult(task.regime.name, task.seed, rounds, [saved[r] for r in rounds],
                         time.perf_counter() - start, row, diverged=state["diverged"])
    rounds: list[int] = []
    scores: list[dict[str, float]] = []
    try:
        for r in _evaluated_rounds(config.rounds, config.eval_every):
            for sim in sims.values():  # up to the next evaluated round (the engine evaluates only there)
                sim.run(r, progress=False)
            score = saved.get(r)
            if score is None:
                if any(sim.round_index > r for sim in sims.values()):
                    raise CheckpointError(f"{run_dir}: the checkpoint is past round {r}, whose score was not "
                                          "kept; use a fresh --checkpoints directory")
                score = plan.score(sims)
                if score_path is not None:
                    state["scores"][str(r)] = score
                    _save_scores(score_path, state)
            if report is not None:
                for done in range(rounds[-1] + 1 if rounds else 1, r):
                    report(done, None)
                report(r, score)
            rounds.append(r)
            scores.append(score)
    except DivergedError as exc:
        message = str(exc)
        if score_path is not None:
            state["diverged"] = message
            _save_scores(score_path, state)
        return RunResult(task.regime.name, task.seed, rounds, scores, time.perf_counter() - start, row,
                         diverged=message)
    return RunResult(task.regime.name, task.seed, rounds, scores, time.perf_counter() - start, row)


# ---------------------------------------------------------------------------------------------- many runs
_WORKER: dict[str, Any] = {}


def _init_worker(workload: Workload, threads: int, events: Any, checkpoints: str | None) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(workload=workload, events=events, checkpoints=checkpoints)


_DONE = -1  # a worker's last event for a task: everything it reported for that task has been sent before it


def _run_in_worker(index: int, task: Task) -> RunResult:
    events = _WORKER["events"]
    try:
        return run_task(_WORKER["workload"], task, checkpoints=_WORKER["checkpoints"],
                        report=lambda r, score: events.put((index, r, score)))
    finally:
        events.put((index, _DONE, None))


def jobs_within(requested: int, run_bytes: int, budget: int | None) -> int:
    """How many runs go side by side: ``requested``, capped so that their estimated memory fits ``budget``."""
    if budget is None or run_bytes <= 0:
        return max(1, requested)
    return max(1, min(requested, budget // run_bytes))


class _Progress:
    """One bar for the whole batch of runs, one step per trained round: regime, seed, round and score."""

    def __init__(self, workload: Workload, tasks: Sequence[Task], enabled: bool, desc: str) -> None:
        self.tasks = tasks
        self.headline = workload.headline
        self.totals = [workload.config_for(t.regime, t.seed, dict(t.overrides)).rounds for t in tasks]
        self.bar = tqdm(total=sum(self.totals), desc=desc, unit="round", disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True)

    def __call__(self, index: int, r: int, score: Mapping[str, float] | None) -> None:
        task = self.tasks[index]
        text = f"{task.regime.name} seed {task.seed} round {r}/{self.totals[index]}"
        if score is not None and self.headline in score:
            text += f" {self.headline} {score[self.headline]:.2f}"
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def execute(workload: Workload, tasks: Sequence[Task], *, jobs: int = 1, progress: bool = True,
            desc: str | None = None, checkpoints: str | os.PathLike[str] | None = None) -> list[RunResult]:
    """Run tasks, ``jobs`` at a time in separate processes; results come back in task order.

    Runs are independent, so running them side by side (``base.threads`` torch threads each) uses the cores
    without the contention that intra-op threading of small matmuls suffers; results do not depend on ``jobs``.
    """
    bar = _Progress(workload, tasks, progress, desc or workload.name)
    ckpt = None if checkpoints is None else str(checkpoints)
    results: dict[int, RunResult] = {}
    try:
        if jobs <= 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                results[i] = run_task(workload, task, checkpoints=ckpt,
                                      report=lambda r, score, i=i: bar(i, r, score))
        else:
            context = multiprocessing.get_context("spawn")
            events = context.Queue()
            with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=context, initializer=_init_worker,
                                     initargs=(workload, workload.base.threads or 1, events, ckpt)) as pool:
                pending = {pool.submit(_run_in_worker, i, task): i for i, task in enumerate(tasks)}
                finished: set[int] = set()
                while pending:
                    done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(events, bar, finished)
                    for future in done:
                        results[pending.pop(future)] = future.result()
                # A result can arrive before the events its worker queued just ahead of it (the queue's feeder
                # thread sends them later): wait for every task's last event so no round goes unreported.
                while len(finished) < len(tasks) and _drain(events, bar, finished, wait_s=30.0):
                    pass
    finally:
        bar.close()
    return [results[i] for i in range(len(tasks))]


def _drain(events: Any, bar: _Progress, finished: set[int], wait_s: float = 0.0) -> bool:
    """Show the queued progress events (waiting up to ``wait_s`` for the first); False if none came."""
    got = False
    while True:
        try:
            index, r, score = events.get(timeout=wait_s) if wait_s and not got else events.get_nowait()
        except queue.Empty:
            return got
        got = True
        if r == _DONE:
            finished.add(index)
        else:
            bar(index, r, score)


def run_suite(workload: Workload, regimes: Sequence[Regime], seeds: Sequence[int], *, jobs: int = 1,
              progress: bool = True, checkpoints: str | os.PathLike[str] | None = None) -> list[RegimeSummary]:
    """Every regime with every seed, summarised per regime (mean and std over the seeds that finished)."""
    tasks = [Task(r, seed) for r in regimes for seed in seeds]
    runs = execute(workload, tasks, jobs=jobs, progress=progress, checkpoints=checkpoints)
    return [summarize_runs([run for run in runs if run.regime == r.name]) for r in regimes]
