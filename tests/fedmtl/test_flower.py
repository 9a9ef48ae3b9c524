"""fedmtl on Flower: the same run as the in-process engine, and what happens when clients fail.

Fast tests drive the real ServerApp logic (``FlowerServer``) and the real ClientApp over a small in-process
stand-in for Flower's Grid; the slow test runs the apps in Flower's own simulation runtime (Ray) in a
subprocess and compares every round with ``Simulation``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedmtl import Federation, Simulation
from fedmtl.flower import (
    FlowerServer,
    check_update,
    client_schedules,
    decode_params,
    decode_schedules,
    encode_params,
    encode_schedules,
    make_client_app,
    toy_federation,
)
from fedmtl.schedule import make_schedule

FACTORY = {"fedmtl-factory": "toy", "poll": 0.0, "round-timeout": 5.0,
           "wait-timeout": 5.0}
ROOT = Path(__file__).resolve().parents[2]
# Shared layers: the two engines run the same float32 operations in the same order (measured: identical to the
# bit on this toy); 1e-5 leaves room for BLAS kernels that pick a different blocking for a stack of one client.
ATOL = 1e-5


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """What Flower's ServerApp runtime sets before a server creates messages (run, node and task ids)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def reference(run_config: dict) -> Simulation:
    setup = toy_federation(run_config)
    sim = Simulation(setup.model(), setup.spec, Federation(setup.clients()), setup.config)
    sim.run(progress=False)
    return sim


class LocalGrid:
    """Flower's Grid API over in-process ClientApps: one Context per node, replies computed on pull.

    ``dead`` nodes never answer (a client that died mid-round); ``restart`` gives a partition a fresh node with
    an empty Context, as a restarted SuperNode gets.
    """

    def __init__(self, run_config: dict, partitions: int, state_dir: Path | None = None) -> None:
        self.app = make_client_app(run_config)
        self.run_config = run_config
        self.state_dir = state_dir
        self.contexts: dict[int, Context] = {}
        self.dead: set[int] = set()
        self.inbox: dict[str, Message] = {}
        self.next_node = 1000
        for p in range(partitions):
            self.add_node(p)

    def add_node(self, partition: int) -> int:
        node, self.next_node = self.next_node, self.next_node + 1
        config = {"partition-id": partition, "num-partitions": -1}
        if self.state_dir is not None:
            config["state-dir"] = str(self.state_dir)
        self.contexts[node] = Context(run_id=1, node_id=node, node_config=config, state=RecordDict(),
                                      run_config={})
        return node

    def node_of(self, partition: int) -> int:
        return max(n for n, c in self.contexts.items() if c.node_config["partition-id"] == partition)

    def get_node_ids(self) -> list[int]:
        return sorted(self.contexts)

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for m in messages:
            mid = uuid.uuid4().hex
            m.metadata.__dict__["_message_id"] = mid  # what Flower's grids do on push
            self.inbox[mid] = m
            ids.append(mid)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        out = []
        for mid in list(ids):
            msg = self.inbox.get(mid)
            node = msg.metadata.dst_node_id if msg is not None else None
            if msg is None or node in self.dead:
                continue
            del self.inbox[mid]
            try:
                out.append(self.app(msg, self.contexts[node]))
            except Exception as exc:  # what a SuperNode reports when a ClientApp raises
                out.append(Message(Error(code=2, reason=repr(exc)), reply_to=msg))
        return out


def run_server(run_config: dict, grid: LocalGrid) -> FlowerServer:
    server = FlowerServer(grid, run_config)  # type: ignore[arg-type]
    server.run()
    return server


# ---------------------------------------------------------------------------- pieces
def test_schedules_and_params_round_trip():
    g = torch.Generator().manual_seed(0)
    stacked = make_schedule(torch.tensor([20, 13]), torch.tensor([0, 0]), 8, 2, g)
    one = client_schedules([stacked], 1)
    back = decode_schedules(encode_schedules(one))
    assert back[0].rows.shape == (4, 1, 8) and torch.equal(back[0].rows, stacked.rows[:4, 1:2])
    assert torch.equal(back[0].weight, stacked.weight[:4, 1:2]) and bool(back[0].active.all())
    params = {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(2)}
    assert all(torch.equal(params[n], t) for n, t in decode_params(encode_params(params)).items())


def test_check_update_rejects_nan_inf_and_wrong_layers():
    expected = {"w": torch.zeros(2, 2)}
    assert check_update({"w": torch.ones(2, 2)}, expected) is None
    assert "NaN/Inf" in check_update({"w": torch.tensor([[0.0, float("inf")], [0.0, 0.0]])}, expected)
    assert "NaN/Inf" in check_update({"w": torch.full((2, 2), float("nan"))}, expected)
    assert "expected" in check_update({"v": torch.zeros(2, 2)}, expected)
    assert "shape" in check_update({"w": torch.zeros(3)}, expected)


# ---------------------------------------------------------------------------- server + client, no Ray
@pytest.mark.parametrize("variant,backend", [("default", "auto"), ("fedprox", "auto"), ("fedrep", "auto"),
                                             ("all", "auto"), ("default", "vmap"), ("fedprox", "loop")])
def test_flower_apps_match_the_in_process_engine(tmp_path, variant, backend):
    run_config = {**FACTORY, "toy-variant": variant, "toy-backend": backend, "result-file": str(tmp_path / "r.pt")}
    server = run_server(run_config, LocalGrid(run_config, 4))
    sim = reference(run_config)
    assert [h["accuracy"] for h in server.history] == [h["accuracy"] for h in sim.history]
    assert [h["per_client"] for h in server.history] == [h["per_client"] for h in sim.history]
    for n, t in sim.common.items():
        torch.testing.assert_close(server.state.common[n], t, atol=ATOL, rtol=0)
    for n, t in sim.task.items():
        torch.testing.assert_close(server.state.task[n], t, atol=ATOL, rtol=0)
    saved = torch.load(tmp_path / "r.pt", weights_only=True)
    assert saved["history"] == server.history


def test_personal_layers_never_reach_the_server():
    run_config = dict(FACTORY)
    grid = LocalGrid(run_config, 4)
    sent_keys, seen_keys = set(), set()
    push, pull = grid.push_messages, grid.pull_messages

    def spy_push(messages):
        for m in messages:
            if "arrays" in m.content:
                sent_keys.update(m.content["arrays"].keys())
        return push(messages)

    def spy_pull(ids):
        replies = pull(ids)
        for r in replies:
            if not r.has_error() and "arrays" in r.content:
                seen_keys.update(r.content["arrays"].keys())
        return replies

    grid.push_messages, grid.pull_messages = spy_push, spy_pull
    run_server(run_config, grid)
    assert sent_keys == seen_keys == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_nan_update_is_rejected_and_logged(caplog):
    run_config = {**FACTORY, "toy-nan-client": 1, "toy-clients-per-task": 2}
    with caplog.at_level("WARNING", logger="fedmtl.flower"):
        server = run_server(run_config, LocalGrid(run_config, 4))
    rounds = [e for e in server.events if e["event"] == "round"]
    assert all("c1" in r["rejected"] and "NaN/Inf" in r["rejected"]["c1"] for r in rounds)
    assert all(r["aggregated"] == ["c0", "c2", "c3"] for r in rounds)
    assert "rejected" in caplog.text
    assert all(torch.isfinite(t).all() for t in [*server.state.common.values(), *server.state.task.values()])


def test_dead_client_does_not_stop_the_run_and_keeps_its_personal_state(tmp_path):
    """Client c1 dies after round 1 (its node never answers again), the run goes on without it; it comes back
    on a new node with an empty Context and picks up its personal layers from the state-dir file."""
    run_config = {**FACTORY, "toy-clients-per-task": 2, "num-rounds": 4, "round-timeout": 0.2}
    grid = LocalGrid(run_config, 4, state_dir=tmp_path / "state")
    server = FlowerServer(grid, run_config)  # type: ignore[arg-type]
    from fedmtl.server_state import ServerState

    server.state = ServerState(server.config, server.wait_for_clients(), server.types, server.initial)
    r1 = server.train_round(1)
    assert r1["aggregated"] == ["c0", "c1", "c2", "c3"]
    stored = torch.load(tmp_path / "state" / "c1.pt", weights_only=True)
    grid.dead.add(grid.node_of(1))
    r2 = server.train_round(2)
    assert r2["missing"] == ["c1"] and r2["aggregated"] == ["c0", "c2", "c3"]
    assert server.evaluate()["per_client"]["c1"] != server.evaluate()["per_client"]["c1"]  # NaN: no answer
    del grid.contexts[grid.node_of(1)]  # the dead node leaves; the partition comes back on a new node
    grid.add_node(1)
    r3 = server.train_round(3)
    assert r3["aggregated"] == ["c0", "c1", "c2", "c3"] and not r3["missing"]
    assert r3["personal_restored"] == ["c1"] and not r1["personal_restored"]
    ctx = grid.contexts[grid.node_of(1)]
    assert "fedmtl.personal" in ctx.state
    # round 3 started from the round-1 layers stored in the file, not from the initial ones
    assert not torch.equal(torch.load(tmp_path / "state" / "c1.pt", weights_only=True)["fc3.weight"],
                           stored["fc3.weight"])


def test_malformed_reply_is_rejected_not_fatal():
    run_config = {**FACTORY, "toy-clients-per-task": 2}
    grid = LocalGrid(run_config, 4)
    pull = grid.pull_messages
    victim = None

    def strip_arrays(ids):
        replies = pull(ids)
        for r in replies:
            if not r.has_error() and "arrays" in r.content and r.metadata.src_node_id == victim:
                del r.content["arrays"]
        return replies

    grid.pull_messages = strip_arrays
    server = FlowerServer(grid, run_config)  # type: ignore[arg-type]
    from fedmtl.server_state import ServerState

    server.state = ServerState(server.config, server.wait_for_clients(), server.types, server.initial)
    victim = grid.node_of(2)
    record = server.train_round(1)
    assert "malformed" in record["rejected"]["c2"] and record["aggregated"] == ["c0", "c1", "c3"]


def test_too_few_replies_leave_the_globals_unchanged():
    run_config = {**FACTORY, "toy-clients-per-task": 2, "min-replies": 4, "round-timeout": 0.2}
    grid = LocalGrid(run_config, 4)
    server = FlowerServer(grid, run_config)  # type: ignore[arg-type]
    from fedmtl.server_state import ServerState

    server.state = ServerState(server.config, server.wait_for_clients(), server.types, server.initial)
    before = {n: t.clone() for n, t in server.state.common.items()}
    grid.dead.add(grid.node_of(0))
    record = server.train_round(1)
    assert record["aggregated"] == [] and record["missing"] == ["c0"]
    assert all(torch.equal(before[n], server.state.common[n]) for n in before)


# ---------------------------------------------------------------------------- Flower's simulation runtime
DRIVER = textwrap.dedent("""
    import json, sys, time
    start = time.perf_counter()
    from flwr.simulation import run_simulation
    from fedmtl.flower import make_client_app, make_server_app
    run_config = json.loads(sys.argv[1])
    run_simulation(server_app=make_server_app(run_config), client_app=make_client_app(run_config),
                   num_supernodes=4, backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    print("driver seconds", round(time.perf_counter() - start, 2))
""")


@pytest.mark.slow
def test_flower_simulation_runtime_matches_the_in_process_engine(tmp_path):
    """Same seed, same config, fixed sampling (1 client per task per round, from the run generator), no dropout:
    per-round accuracies are equal and the final shared layers agree within ATOL."""
    run_config = {**FACTORY, "poll": 0.05, "round-timeout": 120.0, "wait-timeout": 120.0,
                  "out-file": str(tmp_path / "events.jsonl"), "result-file": str(tmp_path / "result.pt")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "FLWR_HOME": str(tmp_path / "flwr-home"), "FLWR_TELEMETRY_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(run_config)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "result.pt").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = torch.load(tmp_path / "result.pt", weights_only=True)
    sim = reference(run_config)
    assert len(result["history"]) == len(sim.history) == 3
    for got, want in zip(result["history"], sim.history, strict=True):
        assert got["round"] == want["round"] and got["accuracy"] == want["accuracy"]
        assert got["per_client"] == want["per_client"]
    for n, t in sim.common.items():
        torch.testing.assert_close(result["common"][n], t, atol=ATOL, rtol=0)
    for n, t in sim.task.items():
        torch.testing.assert_close(result["task"][n], t, atol=ATOL, rtol=0)
    rounds = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    print(f"run_simulation subprocess: {elapsed:.1f} s;",
          [(r.get("round"), r.get("train_seconds"), r.get("eval_seconds")) for r in rounds if r["event"] == "round"])
