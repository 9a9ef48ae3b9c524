"""Training configuration as a typed dataclass with defaults, loadable from TOML.

A TOML file looks like::

    rounds = 100
    local_epochs = 5
    batch_size = 32
    lr = 0.01
    clients_per_task = "all"

    [aggregators.common]
    name = "fedadam"
    lr = 0.01

    [[phases]]          # optional (FedRep-style): train the personal head first, then the rest
    epochs = 4
    layers = ["personal"]
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from fedmtl.devices import DEVICE_PATTERN, resolve_device
from fedmtl.errors import ConfigError, LayerSpecError
from fedmtl.layers import LayerType
from fedmtl.losses import check_loss

__all__ = ["Phase", "TrainConfig", "load_config"]


_SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 64-bit seeds


def _is_int(value: Any) -> bool:
    """Python and numpy integers; not bools, not integral floats (``rounds = 2.0`` is a typo worth naming)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(name: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"config {name} must be a positive integer, got {value!r}")
    return int(value)


def _number(name: str, value: Any, *, lo: float, lo_open: bool, hi: float | None = None) -> float:
    """A finite real in ``(lo, hi)`` / ``[lo, hi)``; bools and strings are refused, not coerced."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (hi is None or value < hi)
    if not ok:
        bounds = f"{'(' if lo_open else '['}{lo:g}, {'inf' if hi is None else f'{hi:g}'})"
        raise ConfigError(f"config {name} must be a number in {bounds}, got {value!r}")
    return value


@dataclass(frozen=True)
class Phase:
    """Part of a round's local training: ``epochs`` epochs that update only the listed layer types."""

    epochs: int
    layers: tuple[str, ...]

    def __post_init__(self) -> None:
        _positive_int("phases epochs", self.epochs)
        if isinstance(self.layers, str) or not isinstance(self.layers, list | tuple) or not self.layers:
            raise ConfigError(f"config phases layers must be a non-empty list of layer types, got {self.layers!r}")
        for name in self.layers:
            if not isinstance(name, str):
                raise ConfigError(f"config phases layers must be layer type names, got {name!r}")
            try:
                kind = LayerType.parse(name)
            except LayerSpecError as exc:
                raise ConfigError(f"config phases layers: {exc}") from None
            if kind is LayerType.PRETRAINED:
                raise ConfigError("config phases layers cannot include 'pretrained': pre-trained layers are frozen")
        object.__setattr__(self, "layers", tuple(self.layers))

    @classmethod
    def of(cls, value: Any) -> Phase:
        """A phase from a config table ``{epochs = N, layers = [...]}`` (or a Phase)."""
        if isinstance(value, Phase):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config phases must be tables of epochs and layers, got {value!r}")
        unknown = sorted(set(value) - {"epochs", "layers"})
        if unknown or "epochs" not in value or "layers" not in value:
            raise ConfigError(f"config phases entries need exactly 'epochs' and 'layers', got keys {sorted(value)}")
        return cls(value["epochs"], value["layers"])


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run's result except the model, the layer spec and the data.

    Every field is checked here, whichever way the config was made (Python, TOML, JSON, the CLIs), so a bad
    value is one :class:`ConfigError` naming the field before anything trains. ``device`` ("auto", "cpu",
    "cuda", "cuda:N"; "auto" is resolved when the run starts) and ``memory_budget`` (bytes; None: derived from
    the free memory) say where and in how much memory a run executes, not what it computes.
    """

    rounds: int = 100
    local_epochs: int = 5
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    clients_per_task: int | str = "all"
    aggregators: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"common": {"name": "fedavg"}, "task": {"name": "fedavg"}}
    )
    phases: tuple[Phase, ...] = ()
    loss: str = "cross_entropy"
    backend: str = "auto"
    keep_optimizer_state: bool = False
    ditto_lambda: float = 0.0
    seed: int = 0
    threads: int | None = None
    eval_every: int = 1
    device: str = "cpu"
    memory_budget: int | None = None

    RUN_ONLY: ClassVar[tuple[str, ...]] = ("rounds", "threads", "eval_every", "device", "memory_budget")
    """Fields that say how long or where a run executes, not what it computes (left out of checkpoint
    fingerprints, so a run may resume with more rounds, other threads or another device)."""

    def __post_init__(self) -> None:
        for name in ("rounds", "local_epochs", "batch_size", "eval_every"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        _number("lr", self.lr, lo=0.0, lo_open=True)
        _number("momentum", self.momentum, lo=0.0, lo_open=False, hi=1.0)
        _number("ditto_lambda", self.ditto_lambda, lo=0.0, lo_open=False)
        k = self.clients_per_task
        if not (isinstance(k, str) and k == "all"):
            if not _is_int(k) or k < 1:
                raise ConfigError(f"config clients_per_task must be a positive integer or 'all', got {k!r}")
            object.__setattr__(self, "clients_per_task", int(k))
        for name in ("threads", "memory_budget"):  # None: the default (all cores; derived from free memory)
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        seed = self.seed
        if not _is_int(seed) or not 0 <= seed < _SEED_LIMIT:
            raise ConfigError(f"config seed must be an integer in [0, 2**64), got {seed!r}")
        object.__setattr__(self, "seed", int(seed))
        if not isinstance(self.keep_optimizer_state, bool):
            raise ConfigError(f"config keep_optimizer_state must be true or false, got {self.keep_optimizer_state!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"config device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if not isinstance(self.loss, str):
            raise ConfigError(f"config loss must be a loss name, got {self.loss!r}")
        try:
            check_loss(self.loss)
        except ConfigError as exc:
            raise ConfigError(f"config {exc}") from None
        self._check_backend()
        object.__setattr__(self, "aggregators", self._checked_aggregators())
        if isinstance(self.phases, str | Mapping) or not isinstance(self.phases, list | tuple):
            raise ConfigError(f"config phases must be a list of tables of epochs and layers, got {self.phases!r}")
        object.__setattr__(self, "phases", tuple(Phase.of(p) for p in self.phases))

    def _check_backend(self) -> None:
        from fedmtl.backends import BACKENDS

        known = ("auto", *BACKENDS)
        if not isinstance(self.backend, str) or self.backend not in known:
            raise ConfigError(f"config backend must be one of {', '.join(known)}, got {self.backend!r}")

    def _checked_aggregators(self) -> dict[str, dict[str, Any]]:
        """Scope -> aggregator table, each built once now: a bad name or option fails here, not in round 1."""
        if not isinstance(self.aggregators, Mapping):
            raise ConfigError("config aggregators must be a table of scope -> aggregator (e.g. "
                              f"[aggregators.common] name = \"fedavg\"), got {self.aggregators!r}")
        aggs: dict[str, dict[str, Any]] = {}
        for scope, spec in self.aggregators.items():
            if scope not in ("common", "task"):
                raise ConfigError(f"config aggregators: scope {scope!r} is unknown (known: common, task)")
            if isinstance(spec, str):
                spec = {"name": spec}
            if not isinstance(spec, Mapping):
                raise ConfigError(f"config aggregators.{scope} must be a name or a table with a name, got {spec!r}")
            if "name" not in spec:
                raise ConfigError(f"config aggregators.{scope} needs a 'name'")
            aggs[scope] = dict(spec)
        for scope in ("common", "task"):
            aggs.setdefault(scope, {"name": "fedavg"})
        from fedmtl.aggregators import make_aggregator

        for scope, spec in aggs.items():
            try:
                make_aggregator(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
            except ConfigError as exc:
                raise ConfigError(f"config aggregators.{scope}: {exc}") from None
        return aggs

    def make_aggregator(self, scope: str):  # -> Aggregator
        from fedmtl.aggregators import make_aggregator

        options = {k: v for k, v in self.aggregators[scope].items() if k != "name"}
        return make_aggregator(self.aggregators[scope]["name"], **options)

    def resolved_device(self) -> torch.device:
        """The device to run on (``auto``: the first CUDA device when one is usable, else the CPU); a CUDA device
        this machine lacks is a one-line ConfigError rather than a CUDA traceback mid-run."""
        return resolve_device(self.device)

    def local_phases(self) -> tuple[Phase, ...]:
        return self.phases or (Phase(self.local_epochs, ("common", "task", "personal")),)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["phases"] = [{"epochs": p.epochs, "layers": list(p.layers)} for p in self.phases]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str = "config") -> TrainConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{origin}: expected a table of TrainConfig keys, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{origin}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {str(exc).removeprefix('config ')}") from None


def load_config(path: str | os.PathLike[str], *, base: TrainConfig | None = None, **overrides: Any) -> TrainConfig:
    """Read a TOML file into a :class:`TrainConfig`: the file's keys override ``base`` (default: the
    dataclass defaults) and keyword overrides win over the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    origin = f"config file {path}"
    merged = {**(base.to_dict() if base is not None else {}), **data, **overrides}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{origin}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return TrainConfig.from_dict(merged, origin=origin)
