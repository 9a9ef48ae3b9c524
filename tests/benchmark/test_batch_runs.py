"""Runs batched by the runner: the leaderboard is the one-at-a-time leaderboard, whatever the grouping, jobs,
threads and resumes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmark.cli import main
from benchmark.har import HarData
from benchmark.leaderboard import to_csv, to_json, to_markdown
from benchmark.regimes import REGIMES
from benchmark.runner import RunResult, Task, batch_groups, execute, relative_work, runs_within, summarize_runs
from benchmark.suite import Workload
from fedmtl import Client, TrainConfig

PAPER = ("centralized_joint", "separate", "mtfl")
OTHERS = ("fedavg", "fedrep", "ditto", "lg_fedavg")


def _clients(n: int = 4, dim: int = 8, seed: int = 0) -> tuple[Client, ...]:
    """HAR-like subjects: one task each, unequal sizes, three classes."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, 3, generator=g)
    out = []
    for i in range(n):
        x = torch.randn(30 + 9 * i, dim, generator=g)
        y = (x @ w + 0.5 * torch.randn(len(x), 3, generator=g)).argmax(1)
        out.append(Client(f"subject{i:02d}", f"subject{i:02d}", x[:-12], y[:-12], x[-12:], y[-12:]))
    return tuple(out)


def _workload(**base) -> Workload:
    train = TrainConfig(**{"rounds": 3, "local_epochs": 2, "batch_size": 8, "lr": 0.1, "momentum": 0.0,
                           "threads": 1, **base})
    tuned = {"separate": {"lr": 0.05}, "ditto": {"lr": 0.05}}  # a different lr: one lockstep, two calls
    return Workload("toy", HarData(_clients(), (8, 12, 8, 3)), train, tuned)


def _board(workload: Workload, runs: list[RunResult], regimes) -> tuple[str, str, str]:
    """Every leaderboard file but the picture, with run times (which differ by construction) zeroed and the
    recorded thread count (a setting of how, not what, a run computes) blanked."""
    runs = [dataclasses.replace(r, seconds=0.0, config={**r.config, "threads": None}) for r in runs]
    summaries = [summarize_runs([r for r in runs if r.regime == name]) for name in regimes]
    meta = {"data": "toy"}
    return to_markdown("toy", summaries, meta), to_csv(summaries), to_json("toy", summaries, meta)


def _tasks(regimes, seeds=(0, 1, 2)) -> list[Task]:
    return [Task(REGIMES[name], s) for name in regimes for s in seeds]


def test_paper_comparison_batched_equals_one_at_a_time_whatever_grouping_and_jobs():
    workload, tasks = _workload(), _tasks(PAPER)
    alone = execute(workload, tasks, progress=False, batch_runs=1)
    reference = _board(workload, alone, PAPER)
    assert all(r.diverged is None and len(r.scores) == 3 for r in alone)
    for batch, jobs in [(None, 1), (4, 1), (2, 2)]:
        runs = execute(workload, tasks, progress=False, batch_runs=batch, jobs=jobs)
        assert [r.scores for r in runs] == [r.scores for r in alone], (batch, jobs)
        assert _board(workload, runs, PAPER) == reference


def test_other_regimes_and_thread_counts_give_the_same_leaderboard():
    regimes = PAPER + OTHERS
    tasks = _tasks(regimes, seeds=(0, 1))
    alone = execute(_workload(), tasks, progress=False, batch_runs=1)
    batched = execute(_workload(threads=2), tasks, progress=False, batch_runs=None)
    assert _board(_workload(), batched, regimes) == _board(_workload(), alone, regimes)


def test_sparse_evaluation_and_a_diverging_grid_point_in_a_batch():
    workload = _workload(rounds=5, eval_every=2)
    huge = (("lr", 1e6),)  # the two diverging points share a backend call, as do the two healthy mtfl seeds
    tasks = [Task(REGIMES["mtfl"], 0), Task(REGIMES["mtfl"], 0, huge), Task(REGIMES["separate"], 1),
             Task(REGIMES["fedavg"], 0, huge), Task(REGIMES["mtfl"], 1)]
    alone = execute(workload, tasks, progress=False, batch_runs=1)
    batched = execute(workload, tasks, progress=False, batch_runs=None)
    assert [bool(r.diverged) for r in alone] == [False, True, False, True, False]
    assert "diverged" in alone[1].diverged
    for a, b in zip(alone, batched, strict=True):
        assert (a.rounds, a.scores, a.diverged) == (b.rounds, b.scores, b.diverged)
    assert batched[0].rounds == [2, 4, 5]


def test_batched_checkpoints_resume_to_the_same_rows(tmp_path):
    tasks = _tasks(PAPER, seeds=(0, 1))
    short = execute(_workload(rounds=2), tasks, progress=False, batch_runs=None, checkpoints=tmp_path)
    assert all(r.rounds == [1, 2] for r in short)
    assert (tmp_path / tasks[0].key / "checkpoint.pt").exists()
    resumed = execute(_workload(rounds=4), tasks, progress=False, batch_runs=3, checkpoints=tmp_path)
    fresh = execute(_workload(rounds=4), tasks, progress=False, batch_runs=1)
    assert [r.scores for r in resumed] == [r.scores for r in fresh]
    again = execute(_workload(rounds=4), tasks, progress=False, batch_runs=None, checkpoints=tmp_path)
    assert [r.scores for r in again] == [r.scores for r in fresh]  # finished: scores read back, nothing trains


def test_groups_respect_compatibility_size_and_jobs():
    workload = _workload()
    tasks = _tasks(PAPER) + [Task(REGIMES["mtfl"], 9, (("rounds", 5),))]
    groups = batch_groups(workload, tasks, None)
    assert groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]  # a regime's seeds; another run length apart
    assert all(len(g) <= 2 for g in batch_groups(workload, tasks, 2))
    assert batch_groups(workload, tasks[6:9], None, jobs=2) == [[0], [1, 2]]  # a group for every worker
    assert len(batch_groups(workload, tasks[:2], None, jobs=4)) == 2  # never more groups than runs
    assert batch_groups(workload, tasks, 1) == [[i] for i in range(10)]
    assert sorted(i for g in batch_groups(workload, tasks, 2, jobs=3) for i in g) == list(range(10))
    assert runs_within(None, 2**30, 5 * 2**30) == 5 and runs_within(8, 2**30, None) == 8
    # batches start largest first: Ditto trains two models per client, FedRep one more epoch a round
    work = {name: relative_work(workload, Task(REGIMES[name], 0)) for name in ("ditto", "fedrep", "mtfl")}
    assert work["ditto"] == 2 * work["mtfl"] and work["fedrep"] > work["mtfl"]
    assert runs_within(8, 2**30, 3 * 2**30) == 3 and runs_within(2, 8 * 2**30, 2**30) == 1


@pytest.mark.parametrize("argv, message", [
    (["--batch-runs", "0"], "--batch-runs"),
    (["--engine", "flower", "--batch-runs", "2"], "--batch-runs applies to the in-process runner"),
])
def test_bad_batch_flags_are_one_error_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())
