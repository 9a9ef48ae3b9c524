"""Where a Flower run gets its model, layer spec, config and data: a factory named by a short registered name.

Flower ships code to nodes, not objects: the ServerApp and every ClientApp call the same factory
(``fedmtl-factory = "har"``) with the run config, so both sides build the same model from the same seed and the
same :class:`TrainConfig`. Each client then keeps only its own partition of the data.

Whoever submits a run writes its run config, so the config may only *name* a factory that installed code
registered: fedmtl's own (``toy``) or an entry point in the ``fedmtl.flower_factories`` group (the HAR suite
declares ``har`` in ``pyproject.toml``). Any other value, an import path such as ``subprocess:getoutput``
included, is refused before anything is imported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import torch
from torch import nn

from fedmtl.config import TrainConfig
from fedmtl.errors import ConfigError
from fedmtl.federation import Client
from fedmtl.layers import LayerSpec

__all__ = ["FlowerSetup", "load_factory", "factory_names", "toy_federation", "FACTORY_KEY", "FACTORY_GROUP"]

FACTORY_KEY = "fedmtl-factory"
FACTORY_GROUP = "fedmtl.flower_factories"
"""The entry-point group through which installed packages register factories by name."""
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class FlowerSetup:
    """A federation as a Flower app needs it. ``model()`` must return the same initial weights on every call
    (build it from a seed): server and clients each call it and must agree on the initial layers."""

    model: Callable[[], nn.Module]
    spec: LayerSpec
    config: TrainConfig
    clients: Callable[[], Sequence[Client]]
    info: dict[str, Any] = field(default_factory=dict)


def factory_names() -> list[str]:
    """Every name a run config may use: fedmtl's built-in factories and the registered entry points."""
    return sorted({*_BUILTIN, *(ep.name for ep in entry_points(group=FACTORY_GROUP))})


def _resolve(name: str) -> Callable[[Mapping[str, Any]], FlowerSetup]:
    """The factory registered as ``name``; only a registered entry point is ever imported."""
    if name in _BUILTIN:
        return _BUILTIN[name]
    found = [ep for ep in entry_points(group=FACTORY_GROUP) if ep.name == name]
    if not found:
        raise ConfigError(f"run config {FACTORY_KEY}={name!r} is not a registered factory "
                          f"(registered: {', '.join(factory_names())}; a package registers one as an entry point "
                          f"in {FACTORY_GROUP!r} and is then reinstalled)")
    try:
        return found[0].load()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"run config {FACTORY_KEY}={name!r}: its registered entry point {found[0].value!r} "
                          f"cannot be loaded: {exc}") from None


def load_factory(run_config: Mapping[str, Any]) -> FlowerSetup:
    """Call the factory that ``fedmtl-factory`` names with the run config.

    The value must be a registered short name; anything else (an import path, a typo) is refused in one line
    before any module is imported, so a run config can never choose which code runs.
    """
    name = run_config.get(FACTORY_KEY)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        hint = " (import paths are not accepted)" if isinstance(name, str) and (":" in name or "." in name) else ""
        raise ConfigError(f"run config {FACTORY_KEY}={name!r} must be a registered factory name{hint} "
                          f"(registered: {', '.join(factory_names())})")
    factory = _resolve(name)
    setup = factory(dict(run_config))
    if not isinstance(setup, FlowerSetup):
        raise ConfigError(f"factory {name!r} returned {type(setup).__name__}, expected FlowerSetup")
    return setup


def toy_federation(run_config: Mapping[str, Any]) -> FlowerSetup:
    """A tiny synthetic federation for tests: ``toy-clients`` clients of unequal sizes over ``toy-tasks`` tasks,
    an MLP 10 -> 16 -> 8 -> 3 with one common, one task and one personal layer. Built in milliseconds.
    ``toy-nan-client`` (a partition id) gives that client a NaN feature: its updates come back NaN, which is how
    tests exercise the server's rejection of non-finite updates. ``toy-variant`` changes the training recipe:
    ``fedprox`` (proximal term on common and task layers, median task aggregation), ``fedrep`` (two local phases:
    personal first, then shared) or ``all`` (every client every round, plain SGD); default: FedAvg common,
    FedAdam task, momentum, one client per task per round."""
    from fedmtl.models import mlp

    n_clients = int(run_config.get("toy-clients", 4))
    n_tasks = int(run_config.get("toy-tasks", 2))
    seed = int(run_config.get("seed", 0))
    nan_client = int(run_config.get("toy-nan-client", -1))
    features, classes = 10, 3

    def clients() -> list[Client]:
        g = torch.Generator().manual_seed(1000 + seed)
        out = []
        for i in range(n_clients):
            n = 20 + 7 * i
            w = torch.randn(features, classes, generator=g)
            x = torch.randn(n, features, generator=g)
            xt = torch.randn(15, features, generator=g)
            y = (x @ w).argmax(1)
            if i == nan_client:
                x = x.clone()
                x[0, 0] = float("nan")
            out.append(Client(f"c{i}", f"t{i % n_tasks}", x, y, xt, (xt @ w).argmax(1)))
        return out

    config = TrainConfig(
        rounds=int(run_config.get("num-rounds", 0)) or 3, local_epochs=2, batch_size=8, lr=0.1, momentum=0.5,
        clients_per_task=int(run_config.get("toy-clients-per-task", 1)), seed=seed, threads=1,
        aggregators={"common": {"name": "fedavg"}, "task": {"name": "fedadam", "lr": 0.01}},
        backend=str(run_config.get("toy-backend", "auto")))
    variant = str(run_config.get("toy-variant", "default"))
    variants: dict[str, dict[str, Any]] = {
        "default": {},
        "fedprox": {"aggregators": {"common": {"name": "fedprox", "mu": 0.1}, "task": {"name": "median"}}},
        "fedrep": {"phases": ({"epochs": 2, "layers": ["personal"]}, {"epochs": 1, "layers": ["common", "task"]})},
        "all": {"clients_per_task": "all", "momentum": 0.0},
    }
    if variant not in variants:
        raise ConfigError(f"toy-variant {variant!r} is unknown (known: {', '.join(variants)})")
    config = config.replace(**variants[variant])
    spec = LayerSpec.of(common="fc1", task="fc2", personal="fc3")
    return FlowerSetup(model=lambda: mlp([features, 16, 8, classes], seed=seed), spec=spec, config=config,
                       clients=clients)


_BUILTIN: dict[str, Callable[[Mapping[str, Any]], FlowerSetup]] = {"toy": toy_federation}
"""fedmtl's own factories (fedmtl knows no suite: suites register theirs as entry points)."""
