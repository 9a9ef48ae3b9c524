"""The Flower ServerApp: drives fedmtl rounds itself on the Grid (Message API) with the engine's ServerState.

A round: sample clients and draw their batch schedules from the run generator (exactly as the in-process
engine does), send each sampled client the common layers, its group's task layers and its schedule, and
aggregate the replies with the same aggregators (common over all, task per group, sample-weighted). Personal
layers never travel. Replies with NaN/Inf or the wrong layers are rejected and logged; a round aggregates
whatever valid replies arrived before ``round-timeout`` if there are at least ``min-replies`` of them, and
otherwise leaves the global layers unchanged. Every ``eval_every`` rounds every client evaluates its own
model and the server builds the same metrics as ``Simulation.evaluate``.

Run config keys (all but ``fedmtl-factory`` optional): ``fedmtl-factory``, ``num-rounds`` (0 or absent: the
factory config's rounds), ``round-timeout`` (s, 120), ``min-replies`` (1), ``poll`` (s, 0.1), ``wait-timeout``
(s, 120: how long to wait for every client to come online), ``out-file`` (JSON lines, one per event) and
``result-file`` (``torch.save`` of history and final shared layers).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedmtl.engine import prepare_model
from fedmtl.errors import FedMTLError
from fedmtl.flower.codec import client_schedules, decode_params, encode_params, encode_schedules
from fedmtl.flower.exchange import exchange
from fedmtl.flower.factory import load_factory
from fedmtl.metrics import summarize
from fedmtl.server_state import Roster, ServerState

__all__ = ["ClientInfo", "FlowerServer", "RunSettings", "make_server_app", "server_app", "check_update"]

log = logging.getLogger("fedmtl.flower")
Params = dict[str, torch.Tensor]
NODE_UNAVAILABLE = 5  # flwr.common.constant.ErrorCode.NODE_UNAVAILABLE


@dataclass(frozen=True)
class RunSettings:
    """The server's run-config keys, typed."""

    rounds: int
    round_timeout: float = 120.0
    min_replies: int = 1
    poll: float = 0.1
    wait_timeout: float = 120.0
    out_file: str = ""
    result_file: str = ""

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], default_rounds: int) -> RunSettings:
        get = run_config.get
        return cls(rounds=int(get("num-rounds", 0)) or default_rounds, round_timeout=float(get("round-timeout", 120.0)),
                   min_replies=int(get("min-replies", 1)), poll=float(get("poll", 0.1)),
                   wait_timeout=float(get("wait-timeout", 120.0)), out_file=str(get("out-file", "")),
                   result_file=str(get("result-file", "")))


@dataclass(frozen=True)
class ClientInfo:
    """What a node said about its client in the query round."""

    partition: int
    num_partitions: int
    client_id: str
    task: str
    num_train: int


def check_update(update: Params, expected: Params) -> str | None:
    """Why a client's returned shared layers cannot be aggregated (wrong names or shapes, NaN/Inf), or None."""
    if set(update) != set(expected):
        return f"layers {sorted(update)} != expected {sorted(expected)}"
    for n, t in update.items():
        if t.shape != expected[n].shape:
            return f"layer {n!r} has shape {tuple(t.shape)}, expected {tuple(expected[n].shape)}"
        if not torch.isfinite(t).all():
            return f"layer {n!r} has NaN/Inf values"
    return None


class FlowerServer:
    """One run of the fedmtl server over a Flower Grid."""

    def __init__(self, grid: Grid, run_config: Mapping[str, Any]) -> None:
        self.grid = grid
        self.setup = load_factory(run_config)
        self.config = self.setup.config
        if self.config.ditto_lambda or self.config.keep_optimizer_state:
            raise FedMTLError("the Flower engine does not support ditto_lambda or keep_optimizer_state yet")
        self.settings = RunSettings.from_run_config(run_config, self.config.rounds)
        _, _, self.types, self.initial = prepare_model(self.setup.model(), self.setup.spec, self.config.backend)
        self.registry: dict[int, ClientInfo] = {}  # node id -> client
        self.retired: set[int] = set()  # node ids never to ask again (replaced or unavailable)
        self.state: ServerState | None = None
        self.history: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ logging
    def _event(self, record: dict[str, Any]) -> None:
        self.events.append(record)
        line = json.dumps(record, default=str)
        print("[fedmtl] " + line, flush=True)
        if self.settings.out_file:
            with open(self.settings.out_file, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    # ------------------------------------------------------------------ nodes and clients
    def _discover(self, node_ids: list[int], timeout: float) -> None:
        msgs = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY, group_id="discover",
                        ttl=timeout + 60) for n in node_ids]
        result = exchange(self.grid, msgs, timeout=timeout, poll=self.settings.poll)
        for node, reply in result.ok.items():
            try:
                info = reply.content["info"]
                client = ClientInfo(int(info["partition-id"]), int(info["num-partitions"]),
                                    str(info["client-id"]), str(info["task"]), int(info["num-train"]))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("node %s answered the query without a usable client description: %r", node, exc)
                continue
            for old in [k for k, v in self.registry.items() if v.partition == client.partition]:
                del self.registry[old]  # a restarted node comes back with a new node id
                self.retired.add(old)
            self.registry[node] = client
        for node, (code, reason) in result.errors.items():
            log.warning("query to node %s failed: code %s, %s", node, code, reason[:200])
            if code == NODE_UNAVAILABLE:
                self.retired.add(node)

    def _refresh(self, timeout: float) -> None:
        """Forget nodes that left, ask new ones who they are.

        Retired nodes (replaced by a newer node for the same client, or reported unavailable) are never asked
        again: the SuperLink keeps listing a dead node for up to two heartbeat intervals (about 60 s), and
        asking it would cost a full timeout. A node that stays silent is asked again next round.
        """
        live = set(self.grid.get_node_ids())
        for gone in [n for n in self.registry if n not in live]:
            del self.registry[gone]
        unknown = sorted(live - set(self.registry) - self.retired)
        if unknown:
            self._discover(unknown, timeout)

    def _node_of(self) -> dict[int, int]:
        return {info.partition: node for node, info in self.registry.items()}

    def wait_for_clients(self) -> Roster:
        """Wait until every partition has a node, then build the roster (in partition order, like the factory's
        client list, so sampling matches the in-process engine)."""
        start = time.monotonic()
        while True:
            self._refresh(timeout=min(30.0, self.settings.wait_timeout))
            expected = {info.num_partitions for info in self.registry.values()}
            if len(expected) > 1:
                raise FedMTLError(f"nodes disagree on the number of clients: {sorted(expected)}")
            parts = sorted(info.partition for info in self.registry.values())
            if expected and parts == list(range(expected.pop())):
                break
            if time.monotonic() - start > self.settings.wait_timeout:
                raise FedMTLError(f"only partitions {parts} came online within {self.settings.wait_timeout} s")
            time.sleep(0.5)
        by_partition = sorted(self.registry.values(), key=lambda c: c.partition)
        self._event({"event": "clients", "seconds": round(time.monotonic() - start, 3),
                     "clients": {c.client_id: c.task for c in by_partition}})
        return Roster.build([c.client_id for c in by_partition], [c.task for c in by_partition],
                            [c.num_train for c in by_partition])

    # ------------------------------------------------------------------ one round
    def _shared_record(self, client: int) -> ArrayRecord:
        assert self.state is not None
        shared = self.state.shared_for(torch.tensor([client]), copy=False)
        return encode_params({n: t[0] for n, t in shared.items()})

    def train_round(self, round_index: int) -> dict[str, Any]:
        state = self.state
        assert state is not None
        start = time.monotonic()
        self._refresh(timeout=self.settings.round_timeout)
        clients = state.sample_clients()
        schedules = state.draw_schedules(clients)
        node_of = self._node_of()
        msgs, sent = [], {}
        for column, client in enumerate(clients.tolist()):
            node = node_of.get(client)
            if node is None:
                continue
            content = RecordDict({"arrays": self._shared_record(client),
                                  "schedule": encode_schedules(client_schedules(schedules, column)),
                                  "config": ConfigRecord({"round": round_index})})
            msgs.append(Message(content, dst_node_id=node, message_type=MessageType.TRAIN,
                                group_id=f"train-{round_index}", ttl=self.settings.round_timeout + 60))
            sent[node] = client
        result = exchange(self.grid, msgs, timeout=self.settings.round_timeout, poll=self.settings.poll)
        ids = state.roster.ids
        accepted: dict[int, Params] = {}
        rejected: dict[str, str] = {}
        restored: list[str] = []  # clients whose personal layers came back from their state-dir file
        for node, reply in result.ok.items():
            client = sent[node]
            expected = {n: t[0] for n, t in state.shared_for(torch.tensor([client]), copy=False).items()}
            try:
                update = decode_params(reply.content["arrays"])
                problem = check_update(update, expected)
                from_file = int(reply.content["metrics"].get("personal-from-file", 0))
            except (KeyError, TypeError, ValueError) as exc:
                problem = f"malformed reply: {exc!r}"
            if problem is not None:
                rejected[ids[client]] = problem
                log.warning("round %d: update from client %s rejected: %s", round_index, ids[client], problem)
                continue
            accepted[client] = update
            if from_file:
                restored.append(ids[client])
        for node, (code, _reason) in result.errors.items():
            if code == NODE_UNAVAILABLE:
                self.registry.pop(node, None)
                self.retired.add(node)
        order = sorted(accepted)
        aggregated = len(order) >= self.settings.min_replies and bool(order)
        if aggregated:
            # weights: the training-set sizes the clients reported when they joined (as the in-process engine)
            stacked = {n: torch.stack([accepted[c][n] for c in order]) for n in accepted[order[0]]}
            state.aggregate(torch.tensor(order, dtype=torch.int64), stacked)
        else:
            log.warning("round %d: %d valid replies < min-replies %d; global layers unchanged", round_index,
                        len(order), self.settings.min_replies)
        return {"round": round_index, "sampled": [ids[c] for c in clients.tolist()],
                "aggregated": [ids[c] for c in order] if aggregated else [], "rejected": rejected,
                "personal_restored": sorted(restored),
                "errors": {ids[sent[n]]: f"{code}: {reason[:200]}" for n, (code, reason) in result.errors.items()},
                "missing": [ids[sent[n]] for n in result.missing] + [ids[c] for c in clients.tolist()
                                                                     if c not in node_of],
                "train_seconds": round(time.monotonic() - start, 3)}

    def evaluate(self) -> dict[str, Any]:
        """Every client's own model on its own test data; a client that does not answer counts 0 of 0."""
        state = self.state
        assert state is not None
        m = len(state.roster)
        node_of = self._node_of()
        msgs, sent = [], {}
        for client in range(m):
            node = node_of.get(client)
            if node is None:
                continue
            msgs.append(Message(RecordDict({"arrays": self._shared_record(client)}), dst_node_id=node,
                                message_type=MessageType.EVALUATE, group_id="evaluate",
                                ttl=self.settings.round_timeout + 60))
            sent[node] = client
        result = exchange(self.grid, msgs, timeout=self.settings.round_timeout, poll=self.settings.poll)
        correct = torch.zeros(m, dtype=torch.int64)
        total = torch.zeros(m, dtype=torch.int64)
        for node, reply in result.ok.items():
            try:
                metrics = reply.content["metrics"]
                correct[sent[node]], total[sent[node]] = int(metrics["correct"]), int(metrics["total"])
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("evaluation reply from client %s unusable: %r", state.roster.ids[sent[node]], exc)
        return summarize(correct, total, list(state.roster.ids), list(state.roster.client_tasks))

    # ------------------------------------------------------------------ the run
    def run(self) -> list[dict[str, Any]]:
        roster = self.wait_for_clients()
        self.state = ServerState(self.config, roster, self.types, self.initial)
        for round_index in range(1, self.settings.rounds + 1):
            record = self.train_round(round_index)
            if round_index % self.config.eval_every == 0 or round_index == self.settings.rounds:
                start = time.monotonic()
                metrics = self.evaluate()
                self.history.append({"round": round_index, **metrics})
                record.update(accuracy=metrics["accuracy"], client_mean_accuracy=metrics["client_mean_accuracy"],
                              eval_seconds=round(time.monotonic() - start, 3))
            self._event({"event": "round", **record})
        if self.settings.result_file:
            path = Path(self.settings.result_file)
            tmp = path.with_name(path.name + ".tmp")
            torch.save({"history": self.history, "common": self.state.common, "task": self.state.task,
                        "tasks": list(roster.tasks), "events": self.events}, tmp)
            tmp.replace(path)
        self._event({"event": "done", "rounds": self.settings.rounds})
        return self.history


def make_server_app(defaults: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp whose run config falls back to ``defaults`` (``run_simulation`` passes no run config)."""
    fallback = dict(defaults or {})
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        FlowerServer(grid, {**fallback, **dict(context.run_config)}).run()

    return app


server_app = make_server_app()
