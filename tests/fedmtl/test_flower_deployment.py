"""A real Flower deployment on loopback: one SuperLink, three SuperNodes and `flwr run`, all on 127.0.0.1.

Everything runs in its own process group under a private FLWR_HOME, with runtime dependency installation off,
and is killed in ``finally`` whatever happens. The run must match the in-process engine round for round.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedmtl import Federation, Simulation
from fedmtl.flower import toy_federation

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
TIME_LIMIT = 420.0  # seconds for the whole deployment, start to teardown
ATOL = 1e-5

pytestmark = pytest.mark.skipif(not (BIN / "flower-superlink").exists(), reason="flwr CLI not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return True
        time.sleep(0.2)
    return False


class Processes:
    """Started processes, each in its own session so that a kill reaches its children (superexec, clientapps)."""

    def __init__(self, env: dict, logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, {}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process group
        proc = subprocess.Popen(["nice", "-n", "19", *cmd], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.logs, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        end = time.monotonic() + 10
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, end - time.monotonic()))
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)

    def tail(self) -> str:
        logs = sorted(self.logs.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # pgid == pid: start_new_session


@pytest.mark.slow
def test_loopback_deployment_matches_the_in_process_engine(tmp_path):
    start = time.monotonic()
    home, logs = tmp_path / "flwr-home", tmp_path / "logs"
    home.mkdir()
    logs.mkdir()
    link_port = free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
                                      f'address = "{HOST}:{link_port}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    run_config = {"fedmtl-factory": "fedmtl.flower:toy_federation", "toy-clients": 3, "num-rounds": 2,
                  "poll": 0.2, "round-timeout": 90.0, "wait-timeout": 120.0,
                  "out-file": str(tmp_path / "events.jsonl"), "result-file": str(tmp_path / "result.pt")}
    procs = Processes(env, logs)
    try:
        procs.start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", HOST, "--port",
                                  str(link_port), "--disable-runtime-dependency-installation"])
        assert wait_port(link_port, 60), procs.tail()
        for i in range(3):
            procs.start(f"supernode{i}", [str(BIN / "flower-supernode"), "--insecure", "--superlink",
                                          f"{HOST}:{link_port}", "--port", str(free_port()),
                                          "--node-config", f'partition-id={i} state-dir="{tmp_path / "state"}"'])
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        run = procs.start("flwr-run", [str(BIN / "flwr"), "run", str(ROOT / "flower_app"), "loopback", "--stream",
                                       "--run-config", overrides])
        result_file = tmp_path / "result.pt"
        while not result_file.exists() and time.monotonic() - start < TIME_LIMIT:
            if run.poll() is not None and not result_file.exists():
                time.sleep(2)  # the ServerApp may still be finishing after the CLI exits
                break
            time.sleep(0.5)
        assert result_file.exists(), procs.tail()
    finally:
        procs.stop_all()
    result = torch.load(result_file, weights_only=False)
    setup = toy_federation(run_config)
    sim = Simulation(setup.model(), setup.spec, Federation(setup.clients()), setup.config)
    sim.run(progress=False)
    assert [h["per_client"] for h in result["history"]] == [h["per_client"] for h in sim.history]
    for n, t in sim.common.items():
        torch.testing.assert_close(result["common"][n], t, atol=ATOL, rtol=0)
    for n, t in sim.task.items():
        torch.testing.assert_close(result["task"][n], t, atol=ATOL, rtol=0)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["c0.pt", "c1.pt", "c2.pt"]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    print(f"deployment: {time.monotonic() - start:.1f} s;",
          [(e.get("round"), e.get("train_seconds"), e.get("eval_seconds")) for e in events if e["event"] == "round"])
