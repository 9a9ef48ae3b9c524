"""The in-process engine against Flower's own simulation on the HAR workload (engine_vs_flower_sim_har*).

Both sides run the same federation: the HAR ``mtfl`` regime, 30 subject clients, 5 local epochs of batch 32,
plain SGD, evaluation after every round. Flower runs it with ``flwr.simulation.run_simulation`` (Ray backend,
``client_resources`` num_cpus 1, the ``fedmtl.flower`` ServerApp/ClientApp from an importable module); the
engine with ``fedmtl.Simulation``. Per-round times are steady state (median of rounds 3..N, training plus
evaluation); end-to-end times are whole fresh processes, interpreter start-up and data loading included.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]
FACTORY = {"fedmtl-factory": "har", "regime": "mtfl", "seed": 0}

FLOWER_DRIVER = """
import json, sys
from flwr.simulation import run_simulation
from fedmtl.flower import make_client_app, make_server_app
config = json.loads(sys.argv[1])
run_simulation(server_app=make_server_app(config), client_app=make_client_app(config), num_supernodes=30,
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
"""

# The same workload as benchmark.flower_har's factory, built without importing Flower (the engine needs none).
ENGINE_DRIVER = """
import json, sys, time
import torch
from benchmark.har import HarSuiteConfig, har_workload
from benchmark.regimes import REGIMES
from benchmark.runner import layer_spec
from fedmtl import Federation, Simulation, mlp
config = json.loads(sys.argv[1])
torch.set_num_threads(int(config["threads"]))
workload = har_workload(HarSuiteConfig(), progress=False)
regime = REGIMES[config["regime"]]
train = workload.config_for(regime, int(config["seed"])).replace(rounds=int(config["num-rounds"]),
                                                               threads=int(config["threads"]))
sim = Simulation(mlp(workload.data.sizes, seed=int(config["seed"])), layer_spec(regime, len(workload.data.sizes) - 1),
                 Federation(workload.data.clients), train)
times = []
for r in range(1, sim.config.rounds + 1):
    start = time.perf_counter()
    sim.run(rounds=r, progress=False)
    times.append(time.perf_counter() - start)
print(json.dumps({"round_seconds": times, "accuracy": sim.history[-1]["accuracy"]}))
"""


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "HF_HUB_OFFLINE": "1"}


def _timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=1200)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed: {proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def _steady(seconds: list[float]) -> float:
    return statistics.median(seconds[2:] if len(seconds) > 3 else seconds)


def run(rounds: int = 10, engine_threads: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-flower-") as tmp:
        work = Path(tmp)
        env = _env(work / "flwr-home")
        events = work / "events.jsonl"
        # the engine first: Ray's processes wind down for a while after a Flower run and would slow what follows
        engine_config = {**FACTORY, "num-rounds": rounds, "threads": engine_threads}
        engine_e2e, out = _timed([sys.executable, "-c", ENGINE_DRIVER, json.dumps(engine_config)], env, work)
        engine = json.loads(out.strip().splitlines()[-1])
        flower_config = {**FACTORY, "num-rounds": rounds, "poll": 0.05, "out-file": str(events)}
        flower_e2e, _ = _timed([sys.executable, "-c", FLOWER_DRIVER, json.dumps(flower_config)], env, work)
        records = [json.loads(line) for line in events.read_text().splitlines()]
        flower_rounds = [r["train_seconds"] + r.get("eval_seconds", 0.0) for r in records if r["event"] == "round"]
    flower_round, engine_round = _steady(flower_rounds), _steady(engine["round_seconds"])
    return {
        "engine_vs_flower_sim_har": flower_round / engine_round,
        "engine_vs_flower_sim_har_e2e": flower_e2e / engine_e2e,
        "engine_vs_flower_sim_har_detail": {
            "workload": f"HAR mtfl, 30 clients, {rounds} rounds, 5 local epochs, batch 32, plain SGD, eval each round",
            "flower": {"runtime": "flwr.simulation.run_simulation (Ray), client_resources num_cpus 1",
                       "seconds_per_round": flower_round, "end_to_end_seconds": flower_e2e,
                       "round_seconds": flower_rounds},
            "engine": {"threads": engine_threads, "seconds_per_round": engine_round,
                       "end_to_end_seconds": engine_e2e, "round_seconds": engine["round_seconds"]},
        },
    }
