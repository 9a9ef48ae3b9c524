"""The face suite (paper section V, Table III) as a :class:`~benchmark.suite.Suite`.

Order of work: flags and regimes are validated first; the dataset is loaded (or, with no ``--dataset``, the
default one is built once and cached); features are extracted (or read from the cache); then the runner trains.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from benchmark.face_leaderboard import face_files, face_markdown
from benchmark.faces import (
    DEFAULT_OVERRIDES,
    DEFAULT_SETUP,
    DEFAULT_TRAIN,
    FACE_REGIMES,
    HIDDEN,
    PAPER_REGIMES,
    FaceSuiteConfig,
    build_face_data,
    face_workload,
)
from benchmark.memory import available_memory
from benchmark.regimes import Regime
from benchmark.runner import RegimeSummary, jobs_within, layer_spec
from benchmark.suite import Workload
from benchmark.suite_base import SuiteBase
from fedmtl import TrainConfig, mlp, partition
from fedmtl.config import load_config
from fedmtl.errors import ConfigError

__all__ = ["FaceSuite", "SUITE", "FACE_GRID_LRS", "FACE_GRID_EPOCHS", "FACE_GRID_ACTIVE"]

FACE_GRID_LRS = (0.001, 0.003, 0.01, 0.03, 0.1)  # multiplicative, as the paper's
FACE_GRID_EPOCHS = (1, 2, 5)
FACE_GRID_ACTIVE = ("5", "10", "all")


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} must list positive integers")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def default_setup_train(args: argparse.Namespace, train: TrainConfig) -> TrainConfig:
    """The default dataset's training settings (:data:`DEFAULT_SETUP`) with what the command line changed.

    ``train`` is :data:`DEFAULT_TRAIN` after the config file and the flags; every field they changed is kept, every
    other one comes from the setup (a ``--config`` file's values win over both, as they do over the paper's)."""
    flags_base = load_config(args.config, base=DEFAULT_TRAIN) if args.config else DEFAULT_TRAIN
    ours = load_config(args.config, base=DEFAULT_SETUP.train) if args.config else DEFAULT_SETUP.train
    changed = {f.name: getattr(train, f.name) for f in dataclasses.fields(TrainConfig)
               if getattr(train, f.name) != getattr(flags_base, f.name)}
    if args.rounds or args.quick:  # said on the command line, even when equal to the paper's default
        changed["rounds"] = train.rounds
    if args.quick:
        changed["local_epochs"] = train.local_epochs
    return ours.replace(**changed)


def _active(values: Sequence[str], group_size: int) -> list[int | str]:
    out: list[int | str] = []
    for v in values:
        if v == "all":
            out.append("all")
        elif v.isdigit() and int(v) >= 1:
            if int(v) < group_size:
                out.append(int(v))
        else:
            raise ConfigError(f"--grid-active: {v!r} is neither 'all' nor a positive integer")
    return out or ["all"]


class FaceSuite(SuiteBase):
    name = "faces"
    summary = "five face attributes, 100 clients in five task groups (paper Table III)"
    regimes = FACE_REGIMES
    default_regimes = tuple(PAPER_REGIMES)
    default_train = DEFAULT_TRAIN
    default_jobs = 1  # one run already uses every core, and 100 clients' heads take gigabytes
    grid_lrs = FACE_GRID_LRS

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--dataset", metavar="PATH_OR_HUB_ID",
                           help="a `labeling export` folder (or Parquet shards, or a Hub dataset id); default: "
                                "the generated, machine-labelled default dataset, built once and cached")
        group.add_argument("--size", type=int, metavar="N",
                           help=f"faces in the default dataset (no --dataset; default {DEFAULT_SETUP.size}); the "
                                "paper's: 13792")
        group.add_argument("--model", default=None, help="deepface model for the pre-trained layers (default: Dlib, "
                                                         "offline; the paper's: VGG-Face)")
        group.add_argument("--detector", default=None,
                           help="deepface detector (default: skip = images are aligned crops; opencv, dlib...)")
        group.add_argument("--enforce-detection", action="store_true",
                           help="fail on an image without a detected face (default: use the whole image)")
        group.add_argument("--clients", type=int, default=None,
                           help=f"clients, dealt into one group per task (default 100; on the default dataset "
                                f"{DEFAULT_SETUP.clients})")
        group.add_argument("--tasks", type=_names, help="comma list of attributes (default: all of the dataset's)")
        group.add_argument("--hidden", type=_ints,
                           help="hidden widths of the head (default: the paper's 4096,2048,1024; on the default "
                                f"dataset {','.join(map(str, DEFAULT_SETUP.hidden))}, measured)")
        group.add_argument("--cache-dir", metavar="DIR", help="feature cache and DEEPFACE_HOME root "
                                                              "(default: $FEDMTL_CACHE or ~/.cache/fedmtl)")
        group.add_argument("--grid-epochs", type=_ints, default=FACE_GRID_EPOCHS, help="local epochs for --grid")
        group.add_argument("--grid-active", type=_names, default=FACE_GRID_ACTIVE,
                           help="active clients per task group per round for --grid ('all' or integers)")

    def _check(self, args: argparse.Namespace, regimes: Sequence[Regime]) -> tuple[int, ...]:
        if args.clients is not None and args.clients < 1:
            raise ConfigError(f"--clients must be >= 1, got {args.clients}")
        if args.size is not None and args.dataset:
            raise ConfigError("--size sets the size of the default dataset; it does not apply with --dataset")
        if args.size is not None and args.size < 1:
            raise ConfigError(f"--size must be >= 1, got {args.size}")
        hidden = tuple(args.hidden or (HIDDEN if args.dataset else DEFAULT_SETUP.hidden))
        for regime in regimes:  # fail before building or extracting anything
            partition(mlp([2, *hidden, 1]), layer_spec(regime, len(hidden) + 1))
        return hidden

    def _load(self, args: argparse.Namespace, device: str, progress: bool) -> tuple[Any, Any, Any]:
        """The dataset and its features, once per invocation (a grid's validation data reuses them)."""
        from benchmark.datasets.faces import load_faces
        from benchmark.face_parts import MODEL as DEFAULT_FACES_MODEL  # the default dataset's (measured)
        from benchmark.features import DEFAULT_DETECTOR, DEFAULT_MODEL, ExtractorConfig, load_or_extract

        model = args.model or (DEFAULT_MODEL if args.dataset else DEFAULT_FACES_MODEL)
        extractor = ExtractorConfig(model=model, detector=args.detector or DEFAULT_DETECTOR,
                                    enforce_detection=args.enforce_detection)
        loaded = args.memo.setdefault("faces", {})
        key = (args.dataset, args.size, args.cache_dir, extractor)
        if key not in loaded:
            source = args.dataset
            if not source:
                from benchmark.datasets.default_faces import build_default_faces  # its imports are heavy

                source = str(build_default_faces(size=args.size, cache_dir=args.cache_dir, device=device,
                                                 progress=progress))
            dataset = load_faces(source)
            features = load_or_extract(dataset, extractor, cache_dir=args.cache_dir, progress=progress,
                                       device=device)
            loaded[key] = (dataset, features, extractor)
        return loaded[key]

    def settings(self, args: argparse.Namespace, train: TrainConfig, regimes: Sequence[Regime]) -> FaceSuiteConfig:
        """Clients, head and training settings: the paper's with ``--dataset``, :data:`DEFAULT_SETUP`'s (measured
        for the default dataset) without; flags override either."""
        hidden = self._check(args, regimes)
        default = not args.dataset
        if default:
            train = default_setup_train(args, train)
        if args.threads is None and train.threads is None:
            train = train.replace(threads=os.cpu_count() or 1)
        # as for HAR, a config file states the training settings itself: the per-regime defaults step aside
        overrides = {} if args.config else dict(DEFAULT_SETUP.overrides if default else DEFAULT_OVERRIDES)
        clients = args.clients if args.clients is not None else (DEFAULT_SETUP.clients if default else 100)
        return FaceSuiteConfig(clients=clients, tasks=args.tasks, hidden=hidden, train=train, overrides=overrides)

    def workload(self, args: argparse.Namespace, train: TrainConfig, regimes: Sequence[Regime], *,
                 validation: bool = False, progress: bool = True) -> Workload:
        config = self.settings(args, train, regimes)
        train = config.train
        dataset, features, extractor = self._load(args, train.resolved_device().type, progress)
        info = {"data": dataset.source, "images": {s: len(v.sample_ids) for s, v in dataset.splits.items()},
                "model": extractor.model, "detector": extractor.detector, "features_cached": features.cached}
        if dataset.notes:
            info["notes"] = list(dataset.notes)
        data = build_face_data(dataset, features, config, validation=validation, info=info)
        return face_workload(data)

    def grid_points(self, regime: Regime, args: argparse.Namespace, lrs: Sequence[float],
                    validation: Workload) -> list[dict[str, Any]]:
        """The learning rate for every regime; local epochs and active clients per group for the federated
        ones (the paper's grids; an active count not below the smallest group is 'all')."""
        federated = not regime.pooled and regime.name != "local"
        group = min(len(validation.data.group(t)) for t in validation.data.tasks)
        actives = _active(args.grid_active, group) if federated else ["all"]
        epochs = args.grid_epochs if federated else args.grid_epochs[:1]
        return [{"lr": float(lr), "local_epochs": int(e), "clients_per_task": k}
                for lr in lrs for e in epochs for k in actives]

    def train(self, args: argparse.Namespace, workload: Workload, regimes: Sequence[Regime], seeds: Sequence[int], *,
              jobs: int, progress: bool) -> list[RegimeSummary]:
        """As every suite, with :data:`DEFAULT_SETUP`'s runs side by side on the default dataset unless ``--jobs``
        says otherwise (its small head leaves a core idle in one run; the memory budget still caps them)."""
        if not args.dataset and args.jobs is None and DEFAULT_SETUP.jobs != jobs:
            budget = args.memory_budget if args.memory_budget is not None else available_memory()
            jobs = jobs_within(DEFAULT_SETUP.jobs, workload.data.run_bytes(), budget)
            if args.memory_budget is not None:
                base = workload.base.replace(memory_budget=args.memory_budget // jobs)
                workload = dataclasses.replace(workload, base=base)
        return super().train(args, workload, regimes, seeds, jobs=jobs, progress=progress)

    def leaderboard(self, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
        return face_markdown(self.name, summaries, meta), face_files(self.name, summaries, meta)


SUITE = FaceSuite()
