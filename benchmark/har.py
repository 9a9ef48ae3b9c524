"""The HAR suite (paper section VI, Table IV): 30 subjects, each its own task and its own client.

Defaults were picked with ``python -m benchmark --grid`` (see README: learning rate chosen on a validation
split carved from each subject's training data, never on test data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmark.regimes import Regime
from benchmark.runner import layer_spec, pool_clients
from benchmark.suite import RunPlan, Workload
from fedmtl import Client, Federation, LayerSpecError, Simulation, TrainConfig, mlp, partition

__all__ = ["HarSuiteConfig", "HarData", "har_workload", "DEFAULT_TRAIN", "TUNED"]

# Plain SGD as in the paper (W <- W - lr * grad), 5 local epochs of batch 32 per round.
DEFAULT_TRAIN = TrainConfig(rounds=100, local_epochs=5, batch_size=32, lr=0.05, momentum=0.0, threads=1)

# Per-regime learning rates picked by `python -m benchmark --grid` (lr in {0.01, 0.02, 0.05, 0.1}, batch 32,
# 2 seeds per point, best mean accuracy on a validation split of the training data; blocked split, 100 rounds).
# The grid's validation accuracies are in the README.
TUNED: dict[str, dict[str, Any]] = {
    "centralized_joint": {"lr": 0.1},
    "separate": {"lr": 0.05},
    "mtfl": {"lr": 0.1},
    "fedavg": {"lr": 0.05},
    "fedper": {"lr": 0.05},
    "lg_fedavg": {"lr": 0.1},
    "fedrep": {"lr": 0.1},
    "ditto": {"lr": 0.02},
}


@dataclass(frozen=True)
class HarSuiteConfig:
    split: str = "blocked"
    split_seed: int = 0
    hidden: tuple[int, ...] = (128, 64, 32)
    train: TrainConfig = DEFAULT_TRAIN
    overrides: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(TUNED))
    uci_har_path: str | None = None


def _tensor_clients(dataset: Any, validation: bool) -> tuple[Client, ...]:
    clients = []
    for s in dataset.subjects:
        x_tr, y_tr = torch.from_numpy(s.x_train), torch.from_numpy(s.y_train)
        x_te, y_te = torch.from_numpy(s.x_test), torch.from_numpy(s.y_test)
        if validation:
            x_tr, y_tr, x_te, y_te = _holdout(x_tr, y_tr)
        clients.append(Client(f"subject{s.subject:02d}", f"subject{s.subject:02d}", x_tr, y_tr, x_te, y_te))
    return tuple(clients)


def _holdout(x: torch.Tensor, y: torch.Tensor, fraction: float = 0.2) -> tuple[torch.Tensor, ...]:
    """The last ``fraction`` of each class's training rows (in stored order) become validation rows."""
    train_rows, val_rows = [], []
    for label in y.unique():
        rows = (y == label).nonzero().squeeze(1)
        cut = len(rows) - max(1, int(round(fraction * len(rows)))) if len(rows) > 1 else len(rows)
        train_rows.append(rows[:cut])
        val_rows.append(rows[cut:])
    tr, va = torch.cat(train_rows), torch.cat(val_rows)
    return x[tr], y[tr], x[va], y[va]


@dataclass(frozen=True)
class HarData:
    """The HAR suite's data: one client per subject (its own task) and the MLP's widths, input to output."""

    clients: tuple[Client, ...]
    sizes: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)  # what the leaderboard header says about the data

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def check(self, regimes: Sequence[Regime]) -> None:
        """Validate every regime's layer spec against the model before anything trains (fail fast)."""
        for regime in regimes:
            types = regime.layer_types(self.n_layers)
            if len(types) > self.n_layers:
                raise LayerSpecError(f"regime {regime.name!r} types {len(types)} layers but the model has "
                                     f"{self.n_layers} (fc1..fc{self.n_layers})")
            partition(mlp(self.sizes), layer_spec(regime, self.n_layers))

    def plan(self, regime: Regime, config: TrainConfig) -> RunPlan:
        """A regime's one simulation; pooled regimes train one client holding everything and are scored on
        every subject's test data (sample-weighted and client-mean)."""
        federation = Federation(self.clients)
        trained_on = Federation([pool_clients(self.clients)]) if regime.pooled else federation

        def build(part: str, checkpoint_dir: Path | None) -> Simulation:
            return Simulation(mlp(self.sizes, seed=config.seed), layer_spec(regime, self.n_layers), trained_on,
                              config, checkpoint_dir=checkpoint_dir)

        def score(sims: Mapping[str, Simulation]) -> dict[str, float]:
            sim = sims[""]
            metrics = sim.evaluate_on(federation, "pooled") if regime.pooled else sim.history[-1]
            return {"accuracy": metrics["accuracy"], "client_mean_accuracy": metrics["client_mean_accuracy"]}

        row = {"regime": regime.name, "layers": list(regime.layer_types(self.n_layers)), "pooled": regime.pooled,
               "model": list(self.sizes)}
        return RunPlan(("",), build, score, config, row)

    def run_bytes(self) -> int:
        """A worker process (torch and the data) plus every client's model, its copy and its update."""
        params = sum(a * b + b for a, b in zip(self.sizes, self.sizes[1:], strict=False))
        data = sum(c.x_train.numel() + c.x_test.numel() for c in self.clients) * 4
        return 400 * 2**20 + 2 * data + 3 * 4 * params * len(self.clients)

    def meta(self) -> dict[str, Any]:
        return {**self.info, "clients": len(self.clients), "features": self.sizes[0]}


def har_workload(config: HarSuiteConfig, *, validation: bool = False, progress: bool = True) -> Workload:
    """Load (or build once and cache) the HAR features, standardise them and make one client per subject."""
    from benchmark.datasets import load_har, standardize

    dataset = standardize(load_har(config.split, config.split_seed, uci_har_path=config.uci_har_path,
                                   progress=progress))
    clients = _tensor_clients(dataset, validation)
    sizes = (dataset.num_features, *config.hidden, len(dataset.class_names))
    name = "har" if not validation else "har-validation"
    data = "UCI HAR " + config.uci_har_path if config.uci_har_path else "UCI HAPT raw (KCC2020 repack)"
    info = {"split": config.split, "data": data}
    return Workload(name=name, data=HarData(clients, sizes, info), base=config.train, overrides=config.overrides)
