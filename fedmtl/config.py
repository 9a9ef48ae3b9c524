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
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmtl.errors import ConfigError
from fedmtl.layers import LayerType
from fedmtl.losses import check_loss

__all__ = ["Phase", "TrainConfig", "load_config"]


@dataclass(frozen=True)
class Phase:
    """Part of a round's local training: ``epochs`` epochs that update only the listed layer types."""

    epochs: int
    layers: tuple[str, ...]

    def __post_init__(self) -> None:
        if int(self.epochs) < 1:
            raise ConfigError(f"phase epochs must be >= 1, got {self.epochs}")
        for name in self.layers:
            if LayerType.parse(name) is LayerType.PRETRAINED:
                raise ConfigError("phase layers cannot include 'pretrained': pre-trained layers are frozen")
        object.__setattr__(self, "layers", tuple(self.layers))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run's result except the model, the layer spec and the data."""

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
    memory_budget: int | None = None  # bytes

    def __post_init__(self) -> None:
        for name in ("rounds", "local_epochs", "batch_size", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"config {name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"config lr must be > 0, got {self.lr!r}")
        if not self.ditto_lambda >= 0:
            raise ConfigError(f"config ditto_lambda must be >= 0, got {self.ditto_lambda!r}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"config momentum must be in [0, 1), got {self.momentum!r}")
        k = self.clients_per_task
        if not (k == "all" or (isinstance(k, int) and not isinstance(k, bool) and k >= 1)):
            raise ConfigError(f"config clients_per_task must be a positive integer or 'all', got {k!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"config threads must be a positive integer, got {self.threads!r}")
        check_loss(self.loss)
        aggs = {}
        for scope, spec in self.aggregators.items():
            if scope not in ("common", "task"):
                raise ConfigError(f"config aggregators: scope {scope!r} is unknown (known: common, task)")
            spec = {"name": spec} if isinstance(spec, str) else dict(spec)
            if "name" not in spec:
                raise ConfigError(f"config aggregators.{scope} needs a 'name'")
            aggs[scope] = spec
        for scope in ("common", "task"):
            aggs.setdefault(scope, {"name": "fedavg"})
        object.__setattr__(self, "aggregators", aggs)
        phases = tuple(p if isinstance(p, Phase) else Phase(**p) for p in self.phases)
        object.__setattr__(self, "phases", phases)
        self.make_aggregator("common")  # fail now, not after the first round, on a bad name or option
        self.make_aggregator("task")

    def make_aggregator(self, scope: str):  # -> Aggregator
        from fedmtl.aggregators import make_aggregator

        options = {k: v for k, v in self.aggregators[scope].items() if k != "name"}
        return make_aggregator(self.aggregators[scope]["name"], **options)

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{origin}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{origin}: {exc}") from None


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
