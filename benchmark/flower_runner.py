"""``python -m benchmark --engine flower``: the HAR suite's federated regimes trained on Flower.

Each run is one ``flwr.simulation.run_simulation`` (one SuperNode per subject, ``client_resources`` num_cpus 1)
of the ``fedmtl.flower`` ServerApp/ClientApp in a fresh process: Ray and Flower keep process-wide state, so a
process per run keeps runs independent and a crash confined. The run config carries the exact
:class:`TrainConfig` the in-process engine would use (``train-config``), so the two engines' rows compare the
same training. The server's per-round events stream into a progress bar; its result file gives the row.

For several machines, the same factory and run config drive a real deployment (README: "Across machines").
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmark.regimes import Regime
from benchmark.runner import RunResult, summarize_runs
from benchmark.suite import Workload
from fedmtl.errors import ConfigError, FedMTLError

__all__ = ["FLOWER_FACTORY", "check_flower_regimes", "flower_run_config", "run_regime_flower", "run_suite_flower"]

FLOWER_FACTORY = "benchmark.flower_har:federation"
ROOT = Path(__file__).resolve().parents[1]

_DRIVER = """
import json, sys
from flwr.simulation import run_simulation
from fedmtl.flower import make_client_app, make_server_app
config, nodes = json.loads(sys.argv[1]), int(sys.argv[2])
run_simulation(server_app=make_server_app(config), client_app=make_client_app(config), num_supernodes=nodes,
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
"""


def check_flower_regimes(regimes: Sequence[Regime], workload: Workload, seed: int = 0) -> None:
    """Refuse, before anything runs, the regimes that have no Flower form: pooled data, and what the Flower
    engine does not implement yet (Ditto's per-client copies, optimiser state kept across rounds)."""
    for regime in regimes:
        if regime.pooled:
            raise ConfigError(f"regime {regime.name!r} pools all data in one place: it has no federated form "
                              "(run it with --engine simulation)")
        config = workload.config_for(regime, seed)
        if config.ditto_lambda or config.keep_optimizer_state:
            raise ConfigError(f"regime {regime.name!r} needs ditto_lambda/keep_optimizer_state, which the Flower "
                              "engine does not support yet (run it with --engine simulation)")


def flower_run_config(workload: Workload, regime: Regime, seed: int, *, split: str,
                      uci_har: str | None = None, layers: str | None = None) -> dict[str, Any]:
    """The run config that makes the Flower server and clients build this exact run."""
    config: dict[str, Any] = {
        "fedmtl-factory": FLOWER_FACTORY, "regime": regime.name, "seed": seed, "split": split,
        "train-config": json.dumps(workload.config_for(regime, seed).to_dict()),
    }
    if uci_har:
        config["uci-har"] = uci_har
    if layers:
        config["layers"] = layers
    return config


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "HF_HUB_OFFLINE": "1"}


def _rounds_done(path: Path) -> int:
    """Rounds the server has logged so far (the file is being appended to: a partial last line is skipped)."""
    if not path.exists():
        return 0
    done = 0
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            done += json.loads(line).get("event") == "round"
    return done


def run_regime_flower(workload: Workload, regime: Regime, seed: int, run_config: dict[str, Any], *,
                      progress: bool = True, timeout: float = 3600.0) -> RunResult:
    """Train one regime with one seed on Flower's simulation runtime and read its result file."""
    config = workload.config_for(regime, seed)
    with tempfile.TemporaryDirectory(prefix="fedmtl-flower-") as tmp:
        work = Path(tmp)
        events, result_file = work / "events.jsonl", work / "result.pt"
        full = {**run_config, "poll": 0.05, "out-file": str(events), "result-file": str(result_file)}
        start = time.perf_counter()
        with open(work / "flower.log", "w+") as log:
            proc = subprocess.Popen([sys.executable, "-c", _DRIVER, json.dumps(full), str(len(workload.data.clients))],
                                    cwd=work, env=_env(work / "flwr-home"), stdout=log, stderr=subprocess.STDOUT)
            with tqdm(total=config.rounds, desc=f"flower {regime.name} s{seed}", disable=not progress,
                      leave=False) as bar:
                while proc.poll() is None:
                    if time.perf_counter() - start > timeout:
                        proc.kill()
                        raise FedMTLError(f"Flower run {regime.name} seed {seed} timed out after {timeout:.0f} s")
                    bar.update(_rounds_done(events) - bar.n)
                    time.sleep(0.2)
            log.seek(0)
            output = log.read()
        if proc.returncode != 0 or not result_file.exists():
            tail = " | ".join(line for line in output.splitlines()[-5:] if line.strip())
            raise FedMTLError(f"Flower run {regime.name} seed {seed} failed (exit {proc.returncode}): {tail}")
        result = torch.load(result_file, weights_only=False)
    history = result["history"]
    if not history:
        raise FedMTLError(f"Flower run {regime.name} seed {seed} evaluated no round")
    sizes = workload.data.sizes
    return RunResult(
        regime=regime.name, seed=seed, rounds=[int(h.get("round", i + 1)) for i, h in enumerate(history)],
        scores=[{"accuracy": h["accuracy"], "client_mean_accuracy": h["client_mean_accuracy"]} for h in history],
        seconds=time.perf_counter() - start,
        config={"regime": regime.name, "engine": "flower", "layers": list(regime.layer_types(len(sizes) - 1)),
                "pooled": False, "model": list(sizes), **config.to_dict()},
    )


def run_suite_flower(workload: Workload, regimes: Sequence[Regime], seeds: Sequence[int], *, split: str,
                     uci_har: str | None = None, layers: str | None = None, progress: bool = True) -> list:
    """Every regime with every seed on Flower, one run at a time (each run already uses every core)."""
    runs: list[RunResult] = []
    tasks = [(r, s) for r in regimes for s in seeds]
    with tqdm(total=len(tasks), desc="har on flower", disable=not progress) as bar:
        for regime, seed in tasks:
            run_config = flower_run_config(workload, regime, seed, split=split, uci_har=uci_har, layers=layers)
            runs.append(run_regime_flower(workload, regime, seed, run_config, progress=progress))
            bar.update(1)
    return [summarize_runs([run for run in runs if run.regime == r.name]) for r in regimes]
