"""The Flower ClientApp: one fedmtl client per node, its personal layers kept on the node.

The node config's ``partition-id`` picks the client (an index into the factory's client list). Messages:

- ``query``: who am I (client id, task, training-set size), so the server can build its roster;
- ``train``: common + own task layers and the batch schedule the server drew for this client; the client
  trains its full model (with its personal layers) and sends back only the common and task layers;
- ``evaluate``: the client's own model (common + task + personal) on its own test data: correct / total.

The maths is the in-process engine's: the same backend and :func:`fedmtl.local.train_phases`, for a stack of
one client.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmtl.engine import prepare_model, stem_features
from fedmtl.federation import Client
from fedmtl.flower.codec import decode_params, decode_schedules, encode_params
from fedmtl.flower.factory import FlowerSetup, load_factory
from fedmtl.flower.personal import load_personal, save_personal
from fedmtl.layers import LayerType
from fedmtl.local import train_phases, trainable_names
from fedmtl.losses import correct_and_count

__all__ = ["ClientRuntime", "make_client_app", "client_app"]

Params = dict[str, torch.Tensor]


@dataclass
class ClientRuntime:
    """One client's data (through the frozen stem), model layout and initial layers, built from the factory."""

    setup: FlowerSetup
    client: Client
    partition: int
    num_partitions: int
    backend: Any
    types: dict[str, LayerType]
    frozen: Params
    initial_personal: Params
    x_train: torch.Tensor
    x_test: torch.Tensor

    @classmethod
    def build(cls, run_config: Mapping[str, Any], partition: int) -> ClientRuntime:
        setup, clients = _setup(json.dumps(dict(run_config), sort_keys=True))
        if not 0 <= partition < len(clients):
            raise ValueError(f"partition-id {partition} is out of range: the federation has {len(clients)} clients")
        if setup.config.threads is not None:
            torch.set_num_threads(setup.config.threads)
        stem, backend, types, initial = prepare_model(setup.model(), setup.spec, setup.config.backend)
        client = clients[partition]
        names = {t: [n for n, nt in types.items() if nt is t] for t in LayerType}
        return cls(setup=setup, client=client, partition=partition, num_partitions=len(clients), backend=backend,
                   types=types, frozen={n: initial[n] for n in names[LayerType.PRETRAINED]},
                   initial_personal={n: initial[n] for n in names[LayerType.PERSONAL]},
                   x_train=stem_features(stem, client.x_train), x_test=stem_features(stem, client.x_test))

    def shared_names(self) -> list[str]:
        return [n for n, t in self.types.items() if t in (LayerType.COMMON, LayerType.TASK)]

    def stacked(self, shared: Params, personal: Params) -> Params:
        """The full model as a stack of one client, in model order."""
        full = {**self.frozen, **shared, **personal}
        return {n: full[n].unsqueeze(0).clone() for n in self.types}

    def train(self, shared: Params, personal: Params, schedules: list) -> tuple[Params, Params]:
        """Local training exactly as the in-process engine does it for this client; returns (shared, personal)."""
        cfg = self.setup.config
        params = self.stacked(shared, personal)
        prox: Params = {}
        for layer_type in (LayerType.COMMON, LayerType.TASK):
            mu = float(cfg.make_aggregator("common" if layer_type is LayerType.COMMON else "task").proximal_mu)
            for n, t in self.types.items():
                if t is layer_type and mu:
                    prox[n] = torch.full((1,), mu)
        anchors = {n: params[n].clone() for n in prox}
        buffers = {n: torch.zeros_like(params[n]) for n in trainable_names(self.types)} if cfg.momentum else {}
        train_phases(self.backend, self.types, params, self.x_train, self.client.y_train, schedules, cfg,
                     prox=prox, anchors=anchors, buffers=buffers)
        return ({n: params[n][0] for n in shared}, {n: params[n][0] for n in personal})

    def evaluate(self, shared: Params, personal: Params) -> tuple[int, int]:
        params = self.stacked(shared, personal)
        x = self.x_test.unsqueeze(0)
        valid = torch.ones(1, x.shape[1], dtype=torch.bool)
        logits = self.backend.forward(params, x)
        correct, total = correct_and_count(self.setup.config.loss, logits, self.client.y_test.unsqueeze(0), valid)
        return int(correct[0]), int(total[0])


@functools.lru_cache(maxsize=2)
def _setup(config_json: str) -> tuple[FlowerSetup, list[Client]]:
    """The factory's output, once per process and run config (one data load for every partition it serves)."""
    setup = load_factory(json.loads(config_json))
    return setup, list(setup.clients())


@functools.lru_cache(maxsize=256)
def _runtime(config_json: str, partition: int) -> ClientRuntime:
    """Cached per process: in simulation one worker serves many partitions and messages; in deployment each
    message gets a fresh process and this is built once per message."""
    return ClientRuntime.build(json.loads(config_json), partition)


def _runtime_for(context: Context, defaults: Mapping[str, Any]) -> ClientRuntime:
    run_config = {**defaults, **dict(context.run_config)}
    partition = int(context.node_config["partition-id"])
    return _runtime(json.dumps(run_config, sort_keys=True), partition)


def _query(msg: Message, context: Context, defaults: Mapping[str, Any]) -> Message:
    rt = _runtime_for(context, defaults)
    info = ConfigRecord({"partition-id": rt.partition, "num-partitions": rt.num_partitions,
                         "client-id": rt.client.id, "task": rt.client.task, "num-train": rt.client.num_train,
                         "num-test": rt.client.num_test})
    return Message(RecordDict({"info": info}), reply_to=msg)


def _train(msg: Message, context: Context, defaults: Mapping[str, Any]) -> Message:
    rt = _runtime_for(context, defaults)
    round_index = int(msg.content["config"]["round"])
    shared = decode_params(msg.content["arrays"])
    personal, source = load_personal(context, rt.client.id, rt.initial_personal)
    schedules = decode_schedules(msg.content["schedule"])
    shared, personal = rt.train(shared, personal, schedules)
    save_personal(context, rt.client.id, personal, round_index)
    metrics = MetricRecord({"num-examples": rt.client.num_train, "partition-id": rt.partition,
                            "personal-from-file": int(source == "file")})
    return Message(RecordDict({"arrays": encode_params(shared), "metrics": metrics}), reply_to=msg)


def _evaluate(msg: Message, context: Context, defaults: Mapping[str, Any]) -> Message:
    rt = _runtime_for(context, defaults)
    shared = decode_params(msg.content["arrays"])
    personal, _ = load_personal(context, rt.client.id, rt.initial_personal)
    correct, total = rt.evaluate(shared, personal)
    metrics = MetricRecord({"correct": correct, "total": total, "partition-id": rt.partition})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def make_client_app(defaults: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp whose run config falls back to ``defaults`` (``run_simulation`` passes no run config)."""
    fallback = dict(defaults or {})
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return _query(msg, context, fallback)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _train(msg, context, fallback)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return _evaluate(msg, context, fallback)

    return app


client_app = make_client_app()
