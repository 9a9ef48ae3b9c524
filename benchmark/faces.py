"""The face suite (paper section V, Table III): five binary attributes, 100 clients in five task groups.

Data. Each split's images are dealt uniformly at random to the clients; client ``c`` belongs to the group of
task ``c mod T`` and holds only that task's label (images it has no label for are dropped from its data).
The centralised cases train on the whole training split with every label it has (Table III's upper bound);
every case is scored on the same test images: each client's test share, on its group's attribute.

Model. Frozen pre-trained layers (deepface, features cached by :mod:`benchmark.features`, standardised with
training-split statistics) feed the paper's head ``d -> 4096 -> 2048 -> 1024 -> 1`` (sigmoid, BCE; one output
per task for ``centralized_joint``, missing labels masked), plain SGD at batch 16.

Regimes. ``centralized_separate`` (one model per task, pooled), ``centralized_joint`` (one model, T outputs,
pooled), ``local`` (each client alone), ``fedavg_per_task`` (every layer task-specific: T separate federations)
and ``mtfl`` (first two layers common, last two task-specific, no personal layer); the HAR suite's
personalised-FL baselines ``fedper``, ``fedrep``, ``lg_fedavg`` and ``ditto`` run on the same clients too.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.regimes import REGIMES, Regime, _half, _plan_all, _plan_split, get_regimes
from benchmark.runner import layer_spec
from fedmtl import Client, DivergedError, Federation, Simulation, TrainConfig, mlp
from fedmtl.errors import ConfigError, DatasetError

__all__ = [
    "FACE_REGIMES", "PAPER_REGIMES", "DEFAULT_TRAIN", "DEFAULT_OVERRIDES", "HIDDEN", "FaceSuiteConfig", "FaceData",
    "FaceRun", "FaceSummary", "get_face_regimes", "build_face_data", "run_face_regime", "run_face_suite",
    "summarize_face_runs", "face_grid_search",
]

HIDDEN = (4096, 2048, 1024)
# The paper: plain SGD, batch 16; lr, local epochs and active clients per round come from a grid (--grid).
# Defaults until a grid has been run on a real export: with 100 clients a client holds ~1% of the images (one
# or two batches), so federated rounds need several local epochs; the pooled cases see every image each epoch.
# Checked on 1,000 generated cartoon faces (Dlib features): mtfl reaches 84% mean accuracy after 5 rounds and
# 90% after 10 with these settings; with 1 local epoch at lr 0.01 it stays near chance after 3.
DEFAULT_TRAIN = TrainConfig(rounds=20, local_epochs=5, batch_size=16, lr=0.05, momentum=0.0, loss="bce",
                            backend="fused", clients_per_task="all")
DEFAULT_OVERRIDES: dict[str, dict[str, Any]] = {
    "centralized_separate": {"local_epochs": 1},
    "centralized_joint": {"local_epochs": 1},
}

PAPER_REGIMES: dict[str, Regime] = {
    r.name: r
    for r in [
        Regime("centralized_separate", "one model per task on the whole pooled training set",
               partial(_plan_all, "common"), pooled=True, paper=True, reference="paper V-A"),
        Regime("centralized_joint", "one model with one sigmoid output per task, pooled; missing labels masked",
               partial(_plan_all, "common"), pooled=True, paper=True, reference="paper V-B"),
        Regime("local", "each client alone on its own data and label", partial(_plan_all, "personal"),
               paper=True, reference="paper V-C"),
        Regime("fedavg_per_task", "one federation per task: every layer shared inside its task group",
               partial(_plan_all, "task"), paper=True, reference="paper V-D"),
        Regime("mtfl", "the paper: first two layers common (all clients), last two task-specific",
               partial(_plan_split, "common", "task", _half), paper=True, reference="paper V-E"),
    ]
}
EXTRA_REGIMES = ("fedper", "fedrep", "lg_fedavg", "ditto")  # from the HAR suite; run on the distributed clients
FACE_REGIMES: dict[str, Regime] = {**PAPER_REGIMES, **{name: REGIMES[name] for name in EXTRA_REGIMES}}


def get_face_regimes(names: str | Sequence[str] | None) -> list[Regime]:
    """``all`` (or None) is the paper's five; names may add the HAR suite's personalised-FL baselines."""
    return get_regimes(names, FACE_REGIMES, list(PAPER_REGIMES.values()), suite="faces")


@dataclass(frozen=True)
class FaceSuiteConfig:
    clients: int = 100
    tasks: tuple[str, ...] | None = None  # default: every binary attribute of the dataset
    hidden: tuple[int, ...] = HIDDEN
    train: TrainConfig = DEFAULT_TRAIN
    overrides: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_OVERRIDES))
    split_seed: int = 0


@dataclass(frozen=True)
class FaceData:
    """Everything the regimes train on, built once: the distributed clients and the pooled training sets."""

    tasks: tuple[str, ...]
    clients: tuple[Client, ...]  # y: [n, 1], the client's own task
    joint_clients: tuple[Client, ...]  # same rows, y: [n, T] with NaN but in the client's own task column
    pooled_joint: Client  # every training image, y: [N, T], NaN = unlabelled
    pooled_task: dict[str, Client]  # per task: every training image labelled for it, y: [n, 1]
    sizes: tuple[int, ...]  # head widths with one output
    config: FaceSuiteConfig

    def config_for(self, regime: Regime, seed: int) -> TrainConfig:
        changes = {"seed": seed, "phases": regime.local_phases(self.config.train.local_epochs), **regime.extra}
        changes.update(self.config.overrides.get(regime.name, {}))
        return self.config.train.replace(**changes)

    def group(self, task: str) -> tuple[Client, ...]:
        return tuple(c for c in self.clients if c.task == task)


def _deal(n: int, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Rows dealt uniformly at random: shares differ by at most one row."""
    return [np.sort(part) for part in np.array_split(rng.permutation(n), clients)]


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    mean = train.mean(0, keepdims=True)
    std = train.std(0, keepdims=True)
    std[std < 1e-8] = 1.0
    return [torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in (train, *others)]


def build_face_data(dataset: Any, features: Any, config: FaceSuiteConfig, *, validation: bool = False) -> FaceData:
    """Clients from a :class:`~benchmark.datasets.faces.FaceDataset` and its :class:`FeatureSet`.

    With ``validation`` the test split is left out entirely: 20% of each client's training share (and the same
    images in the pooled sets) become its test data, so a grid never sees test images.
    """
    tasks = tuple(config.tasks or dataset.tasks)
    unknown = [t for t in tasks if t not in dataset.tasks]
    if unknown:
        raise ConfigError(f"task {unknown[0]!r} is not an attribute of dataset {dataset.source} "
                          f"(has {', '.join(dataset.tasks)})")
    if config.clients < len(tasks):
        raise ConfigError(f"--clients {config.clients} is fewer than the {len(tasks)} task groups")
    for split in ("train", "test"):
        if tuple(features.sample_ids[split]) != tuple(dataset.splits[split].sample_ids):
            raise DatasetError(f"features of {dataset.source} ({split}) do not match its rows; delete "
                               f"{features.path} and run again")
    cols = [dataset.tasks.index(t) for t in tasks]
    labels = {s: dataset.splits[s].labels[:, cols] for s in ("train", "test")}
    x_train, x_test = _standardize(features.features["train"], features.features["test"])
    y_train = torch.from_numpy(np.where(labels["train"] >= 0, labels["train"], np.nan).astype(np.float32))
    y_test = torch.from_numpy(np.where(labels["test"] >= 0, labels["test"], np.nan).astype(np.float32))
    rng = np.random.default_rng(config.split_seed)
    train_parts = _deal(len(x_train), config.clients, rng)
    test_parts = _deal(len(x_test), config.clients, rng)
    if validation:
        cut = [part[: len(part) - max(1, round(0.2 * len(part)))] if len(part) > 1 else part for part in train_parts]
        test_parts = [np.setdiff1d(full, kept) for full, kept in zip(train_parts, cut, strict=True)]
        train_parts, x_test, y_test = cut, x_train, y_train
    clients, joint = [], []
    for c, (tr, te) in enumerate(zip(train_parts, test_parts, strict=True)):
        k = c % len(tasks)
        task = tasks[k]
        tr = tr[labels["train"][tr, k] >= 0]
        te = te[(y_test[te, k] == y_test[te, k]).numpy()]  # labelled rows (NaN != NaN)
        if len(tr) == 0:
            raise DatasetError(f"dataset {dataset.source}: client {c} (task {task}) gets no labelled training "
                               f"image; use fewer clients (--clients) or label more images")
        own = torch.full((len(te), len(tasks)), float("nan"))
        own[:, k] = y_test[te, k]
        cid = f"client{c:03d}"
        clients.append(Client(cid, task, x_train[tr], y_train[tr, k:k + 1], x_test[te], y_test[te, k:k + 1]))
        joint.append(Client(cid, task, x_train[tr], y_train[tr], x_test[te], own))
    train_rows = np.concatenate(train_parts)
    test_rows = np.concatenate(test_parts)
    pooled_joint = Client("pooled", "pooled", x_train[train_rows], y_train[train_rows], x_test[test_rows],
                          y_test[test_rows])
    pooled_task = {}
    for k, task in enumerate(tasks):
        rows = train_rows[labels["train"][train_rows, k] >= 0]
        if len(rows) == 0:
            raise DatasetError(f"dataset {dataset.source}: no training image is labelled for {task}")
        pooled_task[task] = Client("pooled", "pooled", x_train[rows], y_train[rows, k:k + 1], x_test[test_rows],
                                   y_test[test_rows, k:k + 1])
    sizes = (int(x_train.shape[1]), *config.hidden, 1)
    return FaceData(tasks, tuple(clients), tuple(joint), pooled_joint, pooled_task, sizes, config)


@dataclass
class FaceRun:
    regime: str
    seed: int
    per_task: dict[str, float]  # final test accuracy (%) per task
    curves: dict[str, list[float]]  # per task, one value per evaluated round
    rounds: list[int]
    seconds: float
    config: dict[str, Any]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_task.values())


def _evaluated(round_index: int, config: TrainConfig) -> bool:
    return round_index % config.eval_every == 0 or round_index == config.rounds


def _train(sim: Simulation, evaluate: Any, config: TrainConfig, progress: bool, desc: str
           ) -> tuple[list[int], list[dict[str, float]]]:
    rounds, scores = [], []
    for _ in tqdm(range(config.rounds), desc=desc, disable=not progress, leave=False):
        sim.step()
        if _evaluated(sim.round_index, config):
            rounds.append(sim.round_index)
            scores.append(evaluate())
    return rounds, scores


def _pooled_sim(sizes: Sequence[int], pooled: Client, config: TrainConfig, seed: int) -> Simulation:
    regime = PAPER_REGIMES["centralized_joint"]
    return Simulation(mlp(list(sizes), seed=seed), layer_spec(regime, len(sizes) - 1), Federation([pooled]),
                      config.replace(clients_per_task="all"))  # one pooled client: nothing to sample


def run_face_regime(data: FaceData, regime: Regime, seed: int, *, progress: bool = False) -> FaceRun:
    """Train one regime with one seed; per-task test accuracy after every evaluated round."""
    config = data.config_for(regime, seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    n_layers = len(data.sizes) - 1
    start = time.perf_counter()
    desc = f"{regime.name} s{seed}"
    try:
        if regime.name == "centralized_joint":
            sizes = (*data.sizes[:-1], len(data.tasks))
            sim = _pooled_sim(sizes, data.pooled_joint, config, seed)
            fed = Federation(data.joint_clients)
            rounds, scores = _train(sim, lambda: sim.evaluate_on(fed, "pooled")["per_task"], config, progress, desc)
        elif regime.name == "centralized_separate":
            per_task: dict[str, list[float]] = {}
            for task in data.tasks:
                sim = _pooled_sim(data.sizes, data.pooled_task[task], config, seed)
                fed = Federation(data.group(task))
                rounds, got = _train(sim, lambda s=sim, f=fed, t=task: s.evaluate_on(f, "pooled")["per_task"][t],
                                     config, progress, f"{desc} {task}")
                per_task[task] = got
            scores = [{t: per_task[t][i] for t in data.tasks} for i in range(len(rounds))]
        else:
            sim = Simulation(mlp(list(data.sizes), seed=seed), layer_spec(regime, n_layers),
                             Federation(data.clients), config)
            rounds, scores = _train(sim, lambda: sim.evaluate(chunk=8)["per_task"], config, progress, desc)
    except DivergedError as exc:
        raise DivergedError(f"regime {regime.name!r}, seed {seed}: {exc}") from None
    curves = {t: [s[t] for s in scores] for t in data.tasks}
    return FaceRun(regime.name, seed, {t: curves[t][-1] for t in data.tasks}, curves, rounds,
                   time.perf_counter() - start,
                   {"regime": regime.name, "layers": list(regime.layer_types(n_layers)), "pooled": regime.pooled,
                    "model": list(data.sizes), "clients": len(data.clients), **config.to_dict()})


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class FaceSummary:
    """One leaderboard row: per-task accuracy, mean and sample std over seeds (and their mean over tasks)."""

    regime: str
    per_task: dict[str, float]
    per_task_std: dict[str, float]
    mean: float
    mean_std: float
    seeds: int
    seconds: float
    config: dict[str, Any]
    runs: list[FaceRun]

    def curve(self, task: str) -> tuple[list[int], list[float], list[float]]:
        columns = list(zip(*(r.curves[task] for r in self.runs), strict=True))
        return (self.runs[0].rounds, [statistics.fmean(v) for v in columns], [_std(list(v)) for v in columns])


def summarize_face_runs(runs: list[FaceRun]) -> FaceSummary:
    tasks = list(runs[0].per_task)
    config = {k: v for k, v in runs[0].config.items() if k != "seed"}
    config["seeds"] = [r.seed for r in runs]
    return FaceSummary(
        regime=runs[0].regime,
        per_task={t: statistics.fmean(r.per_task[t] for r in runs) for t in tasks},
        per_task_std={t: _std([r.per_task[t] for r in runs]) for t in tasks},
        mean=statistics.fmean(r.mean for r in runs), mean_std=_std([r.mean for r in runs]), seeds=len(runs),
        seconds=sum(r.seconds for r in runs), config=config, runs=runs,
    )


def run_face_suite(data: FaceData, regimes: Sequence[Regime], seeds: Sequence[int], *,
                   progress: bool = True) -> list[FaceSummary]:
    """Every regime with every seed, one after another in this process (each run already uses every thread,
    and the head's weights of 100 clients take gigabytes: parallel runs would multiply that)."""
    runs: dict[str, list[FaceRun]] = {r.name: [] for r in regimes}
    with tqdm(total=len(regimes) * len(seeds), desc="faces", disable=not progress) as bar:
        for regime in regimes:
            for seed in seeds:
                bar.set_postfix(regime=regime.name, seed=seed)
                runs[regime.name].append(run_face_regime(data, regime, seed, progress=progress))
                bar.update(1)
    return [summarize_face_runs(runs[r.name]) for r in regimes]


def face_grid_search(validation: FaceData, regimes: Sequence[Regime], *, lrs: Sequence[float],
                     local_epochs: Sequence[int], active: Sequence[int | str], seeds: Sequence[int] = (0,),
                     progress: bool = True) -> dict[str, dict[str, Any]]:
    """The paper's grids, scored by mean validation accuracy over tasks at the final round (mean over seeds):
    the learning rate for every regime; for the federated ones also local epochs and active clients per task
    group per round. A point that diverges on any seed scores NaN and cannot win."""
    out: dict[str, dict[str, Any]] = {}
    points = []
    for regime in regimes:
        federated = not regime.pooled and regime.name != "local"
        for lr in lrs:
            for epochs in local_epochs if federated else local_epochs[:1]:
                for k in active if federated else ("all",):
                    points.append((regime, {"lr": float(lr), "local_epochs": int(epochs), "clients_per_task": k}))
    with tqdm(total=len(points) * len(seeds), desc="grid", disable=not progress) as bar:
        for regime, changes in points:
            overrides = {**validation.config.overrides, regime.name: {
                **validation.config.overrides.get(regime.name, {}), **changes}}
            data = dataclasses.replace(validation, config=dataclasses.replace(validation.config, overrides=overrides))
            accs = []
            for seed in seeds:
                try:
                    accs.append(run_face_regime(data, regime, seed).mean)
                except DivergedError:
                    accs.append(float("nan"))
                bar.update(1)
            entry = out.setdefault(regime.name, {"grid": []})
            entry["grid"].append({**changes, "val_accuracy": statistics.fmean(accs), "per_seed": accs})
    for entry in out.values():
        best = max(entry["grid"], key=lambda p: -math.inf if math.isnan(p["val_accuracy"]) else p["val_accuracy"])
        entry["best"] = {k: best[k] for k in ("lr", "local_epochs", "clients_per_task")}
        entry["val_accuracy"] = best["val_accuracy"]
    return out
