"""One runner for every suite: runs trained round by round, checkpointed, resumed, side by side, summarised.

A run is a regime, a seed and optional config changes (a grid point). The runner drives its simulations one
round at a time through ``Simulation.run(r)``, scores every evaluated round with the suite's score, and, with a
checkpoint directory, keeps each part's checkpoint and the scores so far (``scores.json``) after every round:
a suite killed at any point and run again resumes to the same rows. A run that diverges is recorded as such
(its row says so) and the other runs go on. A regime's runs (its seeds and grid points; same rounds, evaluation
rounds, threads, device) train together in one :class:`~fedmtl.Lockstep` (``batch_runs`` at a time): one stacked
computation, each run still its own, with the result it has alone.
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
from fedmtl import Client, DivergedError, LayerSpec, Lockstep, TrainConfig
from fedmtl.errors import CheckpointError
from fedmtl.files import atomic_write

__all__ = [
    "Task", "RunResult", "RegimeSummary", "run_task", "run_batch", "batch_groups", "execute", "run_suite",
    "summarize_runs", "pool_clients", "layer_spec", "jobs_within", "runs_within", "relative_work", "SCORES_NAME",
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


class _TaskRun:
    """One run's bookkeeping around its simulations: resume its saved scores, score each evaluated round, save and
    report it, record a divergence. Shared by the one-run path and the batched path, so both write the same."""

    def __init__(self, workload: Workload, task: Task, checkpoints: str | os.PathLike[str] | None,
                 report: Reporter | None) -> None:
        self.task, self.report = task, report
        self.plan = workload.plan(task.regime, task.seed, dict(task.overrides))
        self.config = self.plan.config
        self.row = {**self.plan.row, **self.config.to_dict()}
        self.run_dir = Path(checkpoints) / task.key if checkpoints is not None else None
        self.start = time.perf_counter()
        self.sims = {part: self.plan.build(part, None if self.run_dir is None else
                                           self.run_dir / part if part else self.run_dir)
                     for part in self.plan.parts}
        self.score_path = self.run_dir / SCORES_NAME if self.run_dir is not None else None
        self.state = (_load_scores(self.score_path, _config_key(self.row)) if self.score_path is not None
                      else {"scores": {}})
        reached = min(sim.round_index for sim in self.sims.values())
        self.saved = {int(r): s for r, s in self.state["scores"].items() if int(r) <= reached}
        self.rounds: list[int] = []
        self.scores: list[dict[str, float]] = []
        self.diverged: str | None = self.state.get("diverged")
        if self.diverged:  # it diverged before: its row is what was saved
            self.rounds = sorted(self.saved)
            self.scores = [self.saved[r] for r in self.rounds]

    @property
    def evaluated(self) -> list[int]:
        return _evaluated_rounds(self.config.rounds, self.config.eval_every)

    def scored(self, r: int) -> None:
        """Round ``r`` is trained in every part: score it (or take its saved score), save, report."""
        score = self.saved.get(r)
        if score is None:
            if any(sim.round_index > r for sim in self.sims.values()):
                raise CheckpointError(f"{self.run_dir}: the checkpoint is past round {r}, whose score was not "
                                      "kept; use a fresh --checkpoints directory")
            score = self.plan.score(self.sims)
            if self.score_path is not None:
                self.state["scores"][str(r)] = score
                _save_scores(self.score_path, self.state)
        if self.report is not None:
            for done in range(self.rounds[-1] + 1 if self.rounds else 1, r):
                self.report(done, None)
            self.report(r, score)
        self.rounds.append(r)
        self.scores.append(score)

    def diverge(self, exc: DivergedError) -> None:
        self.diverged = str(exc)
        if self.score_path is not None:
            self.state["diverged"] = self.diverged
            _save_scores(self.score_path, self.state)

    def result(self) -> RunResult:
        return RunResult(self.task.regime.name, self.task.seed, self.rounds, self.scores,
                         time.perf_counter() - self.start, self.row, diverged=self.diverged)


def run_task(workload: Workload, task: Task, *, checkpoints: str | os.PathLike[str] | None = None,
             report: Reporter | None = None) -> RunResult:
    """Train one run round by round; ``report(round, score or None)`` for each round (a score where the round
    is evaluated: every ``eval_every`` rounds and the last).

    With ``checkpoints``, each part checkpoints under ``<checkpoints>/<task.key>[/<part>]`` and the scores so
    far go to ``scores.json`` beside them after every round (checkpoint first, then scores: a kill in between
    leaves a round whose score is recomputed from its checkpoint, which gives the same number).
    """
    run = _TaskRun(workload, task, checkpoints, report)
    if run.diverged:
        return run.result()
    try:
        for r in run.evaluated:
            for sim in run.sims.values():  # up to the next evaluated round (the engine evaluates only there)
                sim.run(r, progress=False)
            run.scored(r)
    except DivergedError as exc:
        run.diverge(exc)
    return run.result()


def run_batch(workload: Workload, tasks: Sequence[Task], *, checkpoints: str | os.PathLike[str] | None = None,
              report: Callable[[int, int, dict[str, float] | None], None] | None = None) -> list[RunResult]:
    """Train runs together: every part of every run in one :class:`~fedmtl.Lockstep`, so their local training
    is one stacked computation; each run still samples, aggregates, evaluates, checkpoints and scores itself,
    and its result is the one :func:`run_task` gives. ``report(index, round, score or None)`` as in
    :func:`execute`. The tasks must share ``rounds`` and ``eval_every`` (:func:`batch_groups`)."""
    runs = [_TaskRun(workload, t, checkpoints, None if report is None else
                     (lambda r, score, i=i: report(i, r, score))) for i, t in enumerate(tasks)]
    live = [run for run in runs if not run.diverged]
    sims = [(run, sim) for run in live for sim in run.sims.values()]
    lock = Lockstep([sim for _, sim in sims])
    evaluated = runs[0].evaluated
    if any(run.evaluated != evaluated for run in runs):
        raise ValueError("run_batch needs runs with the same rounds and eval_every")
    for r in evaluated:
        failed = lock.run(r)
        for i in list(failed):  # a run that diverged stops as a whole: its other parts leave the lockstep
            run = sims[i][0]
            if run.diverged is None:
                run.diverge(failed[i])
                for j, (other, _) in enumerate(sims):
                    if other is run and j not in failed:
                        lock.failed[j] = failed[i]
        for run in live:
            if run.diverged is None:
                run.scored(r)
    return [run.result() for run in runs]


# ---------------------------------------------------------------------------------------------- many runs
_WORKER: dict[str, Any] = {}


def _init_worker(workload: Workload, threads: int, events: Any, checkpoints: str | None) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(workload=workload, events=events, checkpoints=checkpoints)


_DONE = -1  # a worker's last event for a task: everything it reported for that task has been sent before it


def _run_group_in_worker(indices: list[int], tasks: list[Task]) -> list[RunResult]:
    events = _WORKER["events"]
    try:
        return _run_group(_WORKER["workload"], tasks, _WORKER["checkpoints"],
                          lambda k, r, score: events.put((indices[k], r, score)))
    finally:
        for index in indices:
            events.put((index, _DONE, None))


def _run_group(workload: Workload, tasks: Sequence[Task], checkpoints: str | None,
               report: Callable[[int, int, dict[str, float] | None], None]) -> list[RunResult]:
    """One run alone (exactly as ever), or several in one lockstep; each batched run is charged its share of
    the group's wall time."""
    if len(tasks) == 1:
        return [run_task(workload, tasks[0], checkpoints=checkpoints,
                         report=lambda r, score: report(0, r, score))]
    start = time.perf_counter()
    results = run_batch(workload, tasks, checkpoints=checkpoints, report=report)
    share = (time.perf_counter() - start) / len(tasks)
    for result in results:
        result.seconds = share
    return results


def batch_groups(workload: Workload, tasks: Sequence[Task], size: int | None, jobs: int = 1) -> list[list[int]]:
    """Which tasks train together: a regime's runs (its seeds and grid points) with the same rounds, evaluation
    rounds, threads and device, at most ``size`` per group (None: no limit); the largest groups are split until
    every one of ``jobs`` workers has one. A regime's seeds share every backend call; runs of different regimes
    share one only where their settings happen to match, and gain little from it (a 30-client stack is wide
    already, and a pooled run's long tail of steps trains alone whatever its stack-mates), so batching them
    together would mostly tie their fates: one group per regime lets the worker pool hand groups out as workers
    free up, which balances the load. The results do not depend on the grouping."""
    keys: dict[tuple[Any, ...], list[int]] = {}
    for i, t in enumerate(tasks):
        c = workload.config_for(t.regime, t.seed, dict(t.overrides))
        keys.setdefault((t.regime.name, c.rounds, c.eval_every, c.threads, str(c.device)), []).append(i)
    groups: list[list[int]] = []
    for members in keys.values():
        limit = len(members) if size is None else max(1, size)
        count = math.ceil(len(members) / limit)
        groups += [members[len(members) * k // count: len(members) * (k + 1) // count] for k in range(count)]
    while len(groups) < jobs and any(len(g) > 1 for g in groups):
        largest = max(range(len(groups)), key=lambda g: len(groups[g]))
        group = groups.pop(largest)
        groups[largest:largest] = [group[:len(group) // 2], group[len(group) // 2:]]
    return sorted(groups)


def relative_work(workload: Workload, task: Task) -> int:
    """A run's work relative to the suite's other runs (they all train on the same data): rounds x local
    epochs x models per client (Ditto trains two). Only the order in which batches start depends on it."""
    c = workload.config_for(task.regime, task.seed, dict(task.overrides))
    return c.rounds * sum(p.epochs for p in c.local_phases()) * (2 if c.ditto_lambda else 1)


def runs_within(requested: int | None, run_bytes: int, budget: int | None) -> int | None:
    """How many runs one process trains together: ``requested`` (None: all), capped so that their estimated
    memory fits ``budget`` (what one process may use)."""
    if budget is None or run_bytes <= 0:
        return requested
    fits = max(1, budget // run_bytes)
    return fits if requested is None else max(1, min(requested, fits))


def jobs_within(requested: int, run_bytes: int, budget: int | None) -> int:
    """How many runs go side by side: ``requested``, capped so that their estimated memory fits ``budget``."""
    return runs_within(max(1, requested), run_bytes, budget) or 1


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
            desc: str | None = None, checkpoints: str | os.PathLike[str] | None = None,
            batch_runs: int | None = 1) -> list[RunResult]:
    """Run tasks, ``jobs`` groups at a time in separate processes; results come back in task order.

    Up to ``batch_runs`` compatible runs (None: all) train together as one stacked computation
    (:func:`run_batch`); 1 trains every run alone. Runs are independent and a batched run computes what it
    computes alone, so results depend neither on ``jobs`` nor on ``batch_runs``. Side by side (``base.threads``
    torch threads each), processes use the cores without the contention intra-op threading of small matmuls
    suffers.
    """
    bar = _Progress(workload, tasks, progress, desc or workload.name)
    ckpt = None if checkpoints is None else str(checkpoints)
    groups = batch_groups(workload, tasks, batch_runs, jobs)
    results: dict[int, RunResult] = {}
    try:
        if jobs <= 1 or len(groups) <= 1:
            for group in groups:
                done = _run_group(workload, [tasks[i] for i in group], ckpt,
                                  lambda k, r, score, group=group: bar(group[k], r, score))
                results.update(zip(group, done, strict=True))
        else:
            context = multiprocessing.get_context("spawn")
            events = context.Queue()
            with ProcessPoolExecutor(min(jobs, len(groups)), mp_context=context, initializer=_init_worker,
                                     initargs=(workload, workload.base.threads or 1, events, ckpt)) as pool:
                # the largest batches first, so that no worker is left with a long one at the end
                order = sorted(groups, key=lambda g: -sum(relative_work(workload, tasks[i]) for i in g))
                pending = {pool.submit(_run_group_in_worker, group, [tasks[i] for i in group]): group
                           for group in order}
                finished: set[int] = set()
                while pending:
                    done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(events, bar, finished)
                    for future in done:
                        results.update(zip(pending.pop(future), future.result(), strict=True))
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
              progress: bool = True, checkpoints: str | os.PathLike[str] | None = None,
              batch_runs: int | None = 1) -> list[RegimeSummary]:
    """Every regime with every seed, summarised per regime (mean and std over the seeds that finished)."""
    tasks = [Task(r, seed) for r in regimes for seed in seeds]
    runs = execute(workload, tasks, jobs=jobs, progress=progress, checkpoints=checkpoints, batch_runs=batch_runs)
    return [summarize_runs([run for run in runs if run.regime == r.name]) for r in regimes]
