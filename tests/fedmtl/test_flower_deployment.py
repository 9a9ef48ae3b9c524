"""A real Flower deployment on loopback: one SuperLink, three SuperNodes and `flwr run`, all on 127.0.0.1.

Everything runs in its own process group under a private FLWR_HOME, with runtime dependency installation off,
and is killed in ``finally`` whatever happens. The run must match the in-process engine round for round.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
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


class Loopback:
    """A SuperLink and SuperNodes on 127.0.0.1 under ``tmp_path``; ``run`` launches ``flwr run`` and waits."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        home, logs = tmp_path / "flwr-home", tmp_path / "logs"
        home.mkdir()
        logs.mkdir()
        self.link_port = free_port()
        (home / "config.toml").write_text(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
                                          f'address = "{HOST}:{self.link_port}"\ninsecure = true\n')
        env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
               "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.procs = Processes(env, logs)
        self.events_file = tmp_path / "events.jsonl"
        self.result_file = tmp_path / "result.pt"
        self.state_dir = tmp_path / "state"

    def start_link(self) -> None:
        self.procs.start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", HOST, "--port",
                                       str(self.link_port), "--disable-runtime-dependency-installation"])
        assert wait_port(self.link_port, 60), self.procs.tail()

    def start_node(self, partition: int, name: str | None = None) -> None:
        self.procs.start(name or f"supernode{partition}",
                         [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"{HOST}:{self.link_port}",
                          "--port", str(free_port()), "--node-config",
                          f'partition-id={partition} state-dir="{self.state_dir}"'])

    def launch(self, run_config: dict, app: Path = ROOT / "flower_app") -> subprocess.Popen:
        run_config = {**run_config, "out-file": str(self.events_file), "result-file": str(self.result_file)}
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        return self.procs.start("flwr-run", [str(BIN / "flwr"), "run", str(app), "loopback",
                                             "--stream", "--run-config", overrides])

    def events(self) -> list[dict]:
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines() if line.strip()]

    def wait_result(self, run: subprocess.Popen, deadline: float) -> dict:
        while not self.result_file.exists() and time.monotonic() < deadline:
            if run.poll() is not None:
                time.sleep(2)  # the ServerApp may still be writing after the CLI exits
                break
            time.sleep(0.5)
        assert self.result_file.exists(), self.procs.tail()
        return torch.load(self.result_file, weights_only=True)


def reference(run_config: dict) -> Simulation:
    setup = toy_federation(run_config)
    sim = Simulation(setup.model(), setup.spec, Federation(setup.clients()), setup.config)
    sim.run(progress=False)
    return sim


def round_times(events: list[dict]) -> list[tuple]:
    return [(e["round"], e["train_seconds"], e.get("eval_seconds")) for e in events if e["event"] == "round"]


@pytest.mark.slow
def test_loopback_deployment_matches_the_in_process_engine(tmp_path):
    start = time.monotonic()
    run_config = {"fedmtl-factory": "toy", "toy-clients": 3, "num-rounds": 2,
                  "poll": 0.2, "round-timeout": 90.0, "wait-timeout": 120.0}
    net = Loopback(tmp_path)
    try:
        net.start_link()
        for i in range(3):
            net.start_node(i)
        result = net.wait_result(net.launch(run_config), start + TIME_LIMIT)
    finally:
        net.procs.stop_all()
    sim = reference(run_config)
    assert [h["per_client"] for h in result["history"]] == [h["per_client"] for h in sim.history]
    for n, t in sim.common.items():
        torch.testing.assert_close(result["common"][n], t, atol=ATOL, rtol=0)
    for n, t in sim.task.items():
        torch.testing.assert_close(result["task"][n], t, atol=ATOL, rtol=0)
    assert sorted(p.name for p in net.state_dir.iterdir()) == ["c0.pt", "c1.pt", "c2.pt"]
    print(f"deployment: {time.monotonic() - start:.1f} s; (round, train s, eval s):", round_times(net.events()))


@pytest.mark.slow
def test_loopback_supernode_killed_mid_run_and_restarted(tmp_path):
    """SIGKILL the SuperNode of c1 (alone in its task group, so sampled every round) once round 1 is logged,
    restart it 5 s later with the same node config: the run finishes all rounds, a round goes on without c1,
    and c1 comes back with its personal layers from its state-dir file (its Context.state died with the node).
    """
    start = time.monotonic()
    run_config = {"fedmtl-factory": "toy", "toy-clients": 3, "num-rounds": 4,
                  "poll": 0.2, "round-timeout": 25.0, "wait-timeout": 120.0}
    net = Loopback(tmp_path)
    try:
        net.start_link()
        for i in range(3):
            net.start_node(i)
        run = net.launch(run_config)
        deadline = start + TIME_LIMIT
        while time.monotonic() < deadline and not any(e["event"] == "round" for e in net.events()):
            assert run.poll() is None, net.procs.tail()
            time.sleep(0.2)
        _signal_group(net.procs.procs["supernode1"], signal.SIGKILL)
        time.sleep(5)
        net.start_node(1, "supernode1-restarted")
        result = net.wait_result(run, deadline)
    finally:
        net.procs.stop_all()
    rounds = [e for e in net.events() if e["event"] == "round"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert any("c1" in r["missing"] or "c1" in r["errors"] for r in rounds[1:]), rounds
    back = [r for r in rounds[1:] if "c1" in r["aggregated"]]
    assert back and back[0]["personal_restored"] == ["c1"], rounds
    assert all(r["aggregated"] for r in rounds)  # every round aggregated what it got
    assert len(result["history"]) == 4
    print(f"fault deployment: {time.monotonic() - start:.1f} s; rounds:",
          [(r["round"], r["aggregated"], r["missing"], list(r["errors"]), r["train_seconds"], r.get("eval_seconds"))
           for r in rounds])


@pytest.mark.slow
def test_loopback_deployment_refuses_a_hostile_factory(tmp_path):
    """A submitted app whose run config names ``subprocess:getoutput`` as its factory, with a first key that is a
    shell command (getoutput of the config dict runs ``sh -c <first key>``): the run fails with the refusal and
    the command runs nowhere, neither on the server nor on a node."""
    start = time.monotonic()
    sentinel = tmp_path / "pwned"
    app = tmp_path / "hostile_app"
    shutil.copytree(ROOT / "flower_app", app, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = (app / "pyproject.toml").read_text()
    pyproject = pyproject.replace("[tool.flwr.app.config]\n", f'[tool.flwr.app.config]\n"touch {sentinel}" = ""\n')
    pyproject = re.sub(r'(?m)^fedmtl-factory = .*$', 'fedmtl-factory = "subprocess:getoutput"', pyproject)
    (app / "pyproject.toml").write_text(pyproject)
    net = Loopback(tmp_path)
    try:
        net.start_link()
        net.start_node(0)
        run = net.launch({"num-rounds": 1, "wait-timeout": 30.0}, app=app)
        deadline = start + TIME_LIMIT
        while run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert run.poll() is not None, net.procs.tail()
        time.sleep(2)  # let the SuperLink's and node's logs settle
        logs = "\n".join(p.read_text(errors="replace") for p in sorted((tmp_path / "logs").glob("*.log")))
    finally:
        net.procs.stop_all()
    assert not sentinel.exists(), logs
    assert "must be a registered factory name" in logs, logs
    assert not net.result_file.exists()
