"""The paper's HAR comparison as a whole suite: its runs batched (one stacked computation) against one at a time.

Workload: ``centralized_joint``, ``separate`` and ``mtfl`` (paper Table IV), seeds 0..2, the blocked split, the
suite's tuned settings, evaluation after every round included: exactly what ``python -m benchmark --regimes
centralized_joint,separate,mtfl`` trains, through the same runner (:func:`benchmark.runner.execute`). Batched:
runs grouped by the runner (``batch_runs`` all, ``jobs`` processes); sequential: one run at a time, one process,
at its best thread count. Both in this process's session, with the matmul rate measured right after.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from typing import Any

import torch

from benchmark.har import HarSuiteConfig, har_workload
from benchmark.regimes import REGIMES
from benchmark.runner import Task, execute
from benchmarks.timing import executed_mlp_flops, matmul_flops, matmul_flops_per_cpu_second, stacked_round_flops

__all__ = ["run", "PAPER_REGIMES"]

PAPER_REGIMES = ("centralized_joint", "separate", "mtfl")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the runner's worker pool is closed when it returns)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _seconds(workload: Any, tasks: list[Task], *, threads: int, jobs: int, batch_runs: int | None
             ) -> tuple[float, float, list[Any]]:
    """Wall and CPU seconds of the runner training ``tasks``, and its results."""
    torch.set_num_threads(threads)
    timed = dataclasses.replace(workload, base=workload.base.replace(threads=threads))
    start, cpu = time.perf_counter(), _cpu_seconds()
    results = execute(timed, tasks, jobs=jobs, progress=False, batch_runs=batch_runs)
    return time.perf_counter() - start, _cpu_seconds() - cpu, results


def run(rounds: int = 100, seeds: int = 3, thread_options: tuple[int, ...] = (1, 2),
        jobs_options: tuple[int, ...] = (1, 2), sequential: bool = True) -> dict[str, Any]:
    """``rounds`` below 100 measures a shorter suite (per-round cost is flat, so the ratios carry over; the
    seconds are then scaled to 100 rounds and say so)."""
    load_before = os.getloadavg()
    workload = har_workload(HarSuiteConfig(split="blocked"), progress=False)
    workload = dataclasses.replace(workload, base=workload.base.replace(rounds=rounds))
    tasks = [Task(REGIMES[name], seed) for name in PAPER_REGIMES for seed in range(seeds)]
    cfg = workload.base
    sizes = workload.data.sizes
    samples = sum(c.num_train for c in workload.data.clients)  # every regime trains every window once an epoch
    flops = executed_mlp_flops(sizes, samples * cfg.local_epochs) * rounds * len(tasks)
    rows = [c.num_train for c in workload.data.clients]
    executed = rounds * sum(stacked_round_flops(sizes, [samples] if t.regime.pooled else rows, cfg.local_epochs,
                                                cfg.batch_size) for t in tasks)
    batched: dict[str, float] = {}
    cpu: dict[str, float] = {}
    cores: dict[str, int] = {}
    scores: dict[str, list[Any]] = {}
    for jobs in jobs_options:
        for threads in thread_options:
            if jobs * threads > (os.cpu_count() or 1):
                continue
            key = f"batched jobs={jobs} threads={threads}"
            batched[key], cpu[key], results = _seconds(workload, tasks, threads=threads, jobs=jobs, batch_runs=None)
            cores[key] = jobs * threads
            scores[key] = [r.scores for r in results]
    sequential_s: dict[str, float] = {}
    if sequential:
        for threads in thread_options:
            key = f"sequential threads={threads}"
            sequential_s[key], cpu[key], results = _seconds(workload, tasks, threads=threads, jobs=1, batch_runs=1)
            scores[key] = [r.scores for r in results]
    best = min(batched, key=batched.__getitem__)
    peak = matmul_flops(cores[best])  # the rate of as many cores as the best batched setting kept busy
    cpu_peak = matmul_flops_per_cpu_second(1)
    cpu_best = min((k for k in batched if k.endswith("threads=1")), key=cpu.__getitem__, default=None)
    seconds = batched[best]
    out: dict[str, Any] = {
        "har_paper_suite_seconds": seconds * 100 / rounds,
        "har_suite_peak_fraction": flops / seconds / peak,
        "har_suite_detail": {
            "workload": f"HAR {', '.join(PAPER_REGIMES)}; seeds 0..{seeds - 1}; {rounds} rounds measured"
                        f"{'' if rounds == 100 else ' (seconds scaled to 100 rounds)'}; blocked split; "
                        f"{len(workload.data.clients)} subjects, {samples} train windows, model {list(sizes)}, "
                        f"{cfg.local_epochs} local epochs, batch {cfg.batch_size}, plain SGD, evaluation after "
                        "every round included",
            "flops_convention": "plain SGD's FLOPs, as the peak fraction is defined: forward, weight gradients "
                                "and the input gradients of every layer but the first (never computed), 2 FLOPs "
                                "per multiply-add, real samples x epochs x rounds x runs",
            "flops": flops,
            "executed_flops": executed,
            "executed_convention": "what the engine executes: the same, except that the input layer of clients on "
                                   "the Gram path (fedmtl.gram: the 30 subjects of separate and mtfl, not the pooled "
                                   "client) counts that path's matmuls instead",
            "seconds_measured": {**batched, **sequential_s},
            "best_batched": best,
            "matmul_gflops": peak / 1e9,
            "matmul_threads": cores[best],
            "suite_gflops": flops / seconds / 1e9,
            "executed_fraction": executed / seconds / peak,
            "cpu_seconds_measured": cpu,
            "cpu_note": "CPU seconds (this process and its worker processes) survive other jobs sharing the "
                        "cores, which wall time does not: the *_cpu ratios compare the same work per CPU-second, "
                        "one thread per process",
            "results_identical": len({repr(s) for s in scores.values()}) == 1,
            "load_average_before": load_before,
        },
    }
    detail = out["har_suite_detail"]
    if cpu_best is not None:
        detail["peak_fraction_cpu"] = flops / cpu[cpu_best] / cpu_peak
        detail["matmul_gflops_per_cpu_second"] = cpu_peak / 1e9
    if sequential_s:
        seq = min(sequential_s.values())
        out["har_suite_batched_vs_sequential"] = seq / seconds
        detail["best_sequential"] = min(sequential_s, key=sequential_s.__getitem__)
        if cpu_best is not None and "sequential threads=1" in cpu:
            detail["batched_vs_sequential_cpu"] = cpu["sequential threads=1"] / cpu[cpu_best]
    detail["load_average_after"] = os.getloadavg()
    return out
