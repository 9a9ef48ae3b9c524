"""One real engine round of the paper's face experiment at full scale (issue 10: face_round_peak_fraction).

Workload (paper section V): 13,792 images as 4096-d features (random here: speed does not depend on the values),
80/20 train/test, dealt to 100 clients in 5 task groups of 20 (client ``c`` in group ``c mod 5``), all active;
the head 4096 -> 4096 -> 2048 -> 1024 -> 1 (27.3M weights), sigmoid + BCE, plain SGD at batch 16, one local
epoch (~110 images, 7 steps per client). Table III's regimes as layer types of fc1..fc4:

- ``centralized_separate``: one pooled client holding every training image, one model per task (5 rounds of
  a pooled model make the regime's round); ``centralized_joint``: one pooled client, 5 outputs, masked BCE;
- ``local``: personal x4; ``fedavg_per_task``: task x4; ``mtfl``: common, common, task, task.

A round is ``Simulation.step()``: sampling, schedules, assembly, training, aggregation (and, for personal state,
writing it back); evaluation is not in it (its time is reported separately). The memory budget is set (default
4 GiB) so chunks and per-client state stay inside it; peak RSS is the whole process's.

``face_round_peak_fraction`` (``make bench``): the ``mtfl`` round's executed model FLOPs per second over the fp32
matmul rate measured in the same process (best of before and after the round). Executed FLOPs: 2 x MACs per
real sample for the forward, 2 x for the weight gradients, 2 x for the input gradients of every layer but the
first (never computed); padded rows of partial batches and the correction terms of the fused backend's deferred
updates (its Gram matrix, the grouped path's low-rank corrections) are executed but not counted.
``python -m benchmarks.face_round`` measures every regime, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.timing import executed_mlp_flops, matmul_flops, matmul_flops_per_cpu_second
from fedmtl import Client, Federation, LayerSpec, Simulation, TrainConfig, mlp
from fedmtl.files import atomic_write

__all__ = ["run", "measure", "SIZES", "REGIMES", "main"]

SIZES = (4096, 4096, 2048, 1024, 1)
SAMPLES = 13_792
TASKS = 5
LAYERS = ("fc1", "fc2", "fc3", "fc4")
REGIMES: dict[str, tuple[str, ...]] = {
    "centralized_separate": ("common",) * 4,
    "centralized_joint": ("common",) * 4,
    "local": ("personal",) * 4,
    "fedavg_per_task": ("task",) * 4,
    "mtfl": ("common", "common", "task", "task"),
}
POOLED = ("centralized_separate", "centralized_joint")


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SAMPLES, SIZES[0], generator=g)
    y = (torch.rand(SAMPLES, TASKS, generator=g) > 0.5).float()
    cut = int(0.8 * SAMPLES)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def federation(registered: int, seed: int = 0) -> Federation:
    """``registered`` clients, each holding its group's label for a uniform random share of the images."""
    x, y, xt, yt = _data(seed)
    rng = np.random.default_rng(seed)
    train = np.array_split(rng.permutation(len(x)), registered)
    test = np.array_split(rng.permutation(len(xt)), registered)
    clients = []
    for c, (tr, te) in enumerate(zip(train, test, strict=True)):
        k = c % TASKS
        tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
        clients.append(Client(f"client{c:04d}", f"task{k}", x[tr], y[tr, k:k + 1], xt[te], yt[te, k:k + 1]))
    return Federation(clients)


def pooled(task: int | None, seed: int = 0) -> Federation:
    """One client holding every training image: one task's label, or all five (``task=None``, joint)."""
    x, y, xt, yt = _data(seed)
    cols = slice(None) if task is None else slice(task, task + 1)
    return Federation([Client("pooled", "pooled", x, y[:, cols], xt, yt[:, cols])])


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(regime: str, registered: int = 100, per_task: int | str = "all", memory_budget: int | None = 4 << 30,
            threads: int = 2, device: str = "cpu", evaluate: bool = True, separate_tasks: int = TASKS
            ) -> dict[str, Any]:
    """One round of ``regime`` (for ``centralized_separate``: one round of each of the first ``separate_tasks``
    tasks' pooled models, one after another)."""
    torch.set_num_threads(threads)
    config = TrainConfig(rounds=1, local_epochs=1, batch_size=16, lr=0.01, momentum=0.0, loss="bce",
                         backend="fused", clients_per_task=per_task, threads=threads, device=device,
                         memory_budget=memory_budget)
    spec = LayerSpec(dict(zip(LAYERS, REGIMES[regime], strict=True)))
    if regime == "centralized_separate":
        feds = (pooled(k) for k in range(separate_tasks))  # one at a time: one task's data in memory at once
    elif regime == "centralized_joint":
        feds = iter([pooled(None)])
    else:
        feds = iter([federation(registered)])
    load_before = os.getloadavg()[0]
    peak_before = matmul_flops(threads)
    seconds = cpu_seconds = eval_seconds = 0.0
    flops = 0
    plans = []
    for fed in feds:
        sizes = (*SIZES[:-1], fed.clients[0].y_train.shape[1])
        sim = Simulation(mlp(sizes, seed=0), spec, fed, config.replace(clients_per_task="all")
                         if regime in POOLED else config)
        plans.append(sim.plan.describe())
        start, cpu_start = time.perf_counter(), time.process_time()
        sim.step()
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
        flops += executed_mlp_flops(sizes, int(sim.n_train[sim.last_clients].sum()))
        if regime == "local" and sim.personal.trained != sim.last_clients.tolist():
            raise RuntimeError("face round benchmark: personal state of the wrong clients")
        if evaluate:
            start = time.perf_counter()
            sim.evaluate(chunk=64)
            eval_seconds += time.perf_counter() - start
        del sim, fed
    peak = max(peak_before, matmul_flops(threads))
    cpu_peak = matmul_flops_per_cpu_second(threads)
    return {"regime": regime, "registered": registered if regime not in POOLED else 1,
            "sampled_per_task": per_task, "models": separate_tasks if regime == "centralized_separate" else 1,
            "seconds_per_round": seconds, "eval_seconds": eval_seconds,
            "cpu_seconds_per_round": cpu_seconds, "load_average": [load_before, os.getloadavg()[0]],
            "cpu_peak_fraction": flops / cpu_seconds / cpu_peak,
            "executed_flops": flops, "gflops": flops / seconds / 1e9, "matmul_gflops": peak / 1e9,
            "peak_fraction": flops / seconds / peak, "peak_rss_bytes": _peak_rss(), "threads": threads,
            "device": device, "memory_budget": memory_budget, "plans": plans}


def run(threads: int = 2, memory_budget: int = 4 << 30) -> dict[str, Any]:
    """``make bench``: the mtfl round of the paper's 100-client setup."""
    result = measure("mtfl", 100, "all", memory_budget, threads, evaluate=False)
    return {
        "face_round_peak_fraction": result["peak_fraction"],
        "face_round_detail": {
            "workload": "paper face setup: 13,792 x 4096-d random features (80/20), 100 clients in 5 groups of "
                        "20, all active, head 4096-4096-2048-1024-1, batch 16, 1 local epoch, plain SGD, BCE, "
                        f"mtfl (common, common, task, task), fused backend, {threads} threads",
            "round": "Simulation.step(): sampling, schedules, assembly, training, aggregation; evaluation not in",
            "flops_convention": "executed model FLOPs on real samples: forward, weight gradients and the input "
                                "gradients of every layer but the first (never computed), 2 per multiply-add; "
                                "padding and deferral corrections not counted",
            "cpu_peak_fraction_note": "the same ratio in FLOPs per CPU-second of this process, round against "
                                      "matmul: robust to other jobs taking the cores (wall-clock is not)",
            **{k: result[k] for k in ("cpu_peak_fraction", "seconds_per_round", "cpu_seconds_per_round", "gflops",
                                      "matmul_gflops", "peak_rss_bytes", "memory_budget", "load_average",
                                      "plans")},
        },
    }


_CHILD = """
import json, sys
from benchmarks.face_round import measure
print("FACE-ROUND " + json.dumps(measure(**json.loads(sys.argv[1]))))
"""


def _isolated(kwargs: dict[str, Any]) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(kwargs)], env=env, stdout=subprocess.PIPE,
                          text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("FACE-ROUND ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"error: face round {kwargs} failed (exit {proc.returncode})")
    return json.loads(lines[-1].removeprefix("FACE-ROUND "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.face_round", description=__doc__.split("\n")[0])
    parser.add_argument("--regimes", default=",".join(REGIMES), help=f"comma list of {', '.join(REGIMES)}")
    parser.add_argument("--registered", default="100", help="comma list: clients registered (sampled: 20 per group)")
    parser.add_argument("--memory-budget-gib", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--separate-tasks", type=int, default=TASKS,
                        help="centralized_separate: how many of the 5 per-task pooled models to train (each as "
                             "long as centralized_joint's one)")
    parser.add_argument("--out", default="results/face_round.json")
    args = parser.parse_args(argv)
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        parser.error(f"--regimes: unknown regime {unknown[0]!r} (known: {', '.join(REGIMES)})")
    registered = [int(r) for r in args.registered.split(",")]
    rows = []
    for reg in registered:
        for regime in regimes:
            if regime in POOLED and reg != registered[0]:
                continue  # one pooled client: the registry size does not apply
            per_task = "all" if reg <= 100 else 20
            row = _isolated({"regime": regime, "registered": reg, "per_task": per_task,
                             "memory_budget": int(args.memory_budget_gib * 2**30), "threads": args.threads,
                             "device": args.device, "separate_tasks": args.separate_tasks})
            rows.append(row)
            print(f"{regime:>21} x{row['models']} registered {row['registered']:>5}: "
                  f"{row['seconds_per_round']:8.1f} s/round, "
                  f"eval {row['eval_seconds']:6.1f} s, peak RSS {row['peak_rss_bytes'] / 2**30:5.2f} GiB, "
                  f"{row['gflops']:6.1f} GFLOP/s = {row['peak_fraction']:.2f} of matmul "
                  f"({row['matmul_gflops']:.1f}); per CPU-second {row['cpu_peak_fraction']:.2f}; cpu "
                  f"{row['cpu_seconds_per_round']:.1f} s, load "
                  f"{row['load_average'][0]:.1f}", flush=True)
    atomic_write(args.out, (json.dumps(rows, indent=2) + "\n").encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
