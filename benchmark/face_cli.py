"""``python -m benchmark --suite faces --dataset PATH_OR_HUB_ID``: the face suite's flags and run.

Order of work: flags, dataset and regimes are validated first; features are extracted (or read from the cache);
grid points and runs train; the leaderboard files are written only when every run has finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["add_face_arguments", "run_faces", "FACE_GRID_LRS", "FACE_GRID_EPOCHS", "FACE_GRID_ACTIVE"]

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


def add_face_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faces suite (--suite faces)")
    group.add_argument("--dataset", metavar="PATH_OR_HUB_ID",
                       help="a `labeling export` folder (or Parquet shards, or a Hub dataset id)")
    group.add_argument("--model", default=None, help="deepface model for the pre-trained layers (default: Dlib, "
                                                     "offline; the paper's: VGG-Face)")
    group.add_argument("--detector", default=None,
                       help="deepface detector (default: skip = images are aligned crops; opencv, dlib...)")
    group.add_argument("--enforce-detection", action="store_true",
                       help="fail on an image without a detected face (default: use the whole image)")
    group.add_argument("--clients", type=int, default=100, help="clients (default 100), dealt into one group per task")
    group.add_argument("--tasks", type=_names, help="comma list of attributes (default: all of the dataset's)")
    group.add_argument("--hidden", type=_ints, help="hidden widths of the head (default 4096,2048,1024)")
    group.add_argument("--cache-dir", metavar="DIR", help="feature cache and DEEPFACE_HOME root "
                                                          "(default: $FEDMTL_CACHE or ~/.cache/fedmtl)")
    group.add_argument("--grid-epochs", type=_ints, default=FACE_GRID_EPOCHS, help="local epochs for --grid")
    group.add_argument("--grid-active", type=_names, default=FACE_GRID_ACTIVE,
                       help="active clients per task group per round for --grid ('all' or integers)")


def _active(values: tuple[str, ...], group_size: int) -> list[int | str]:
    from fedmtl.errors import ConfigError

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


def run_faces(args: argparse.Namespace) -> int:
    from benchmark.cli import GRID_LRS, _train_config
    from benchmark.datasets.faces import load_faces
    from benchmark.face_leaderboard import face_markdown, write_face_leaderboard
    from benchmark.faces import (
        DEFAULT_OVERRIDES,
        DEFAULT_TRAIN,
        HIDDEN,
        FaceSuiteConfig,
        build_face_data,
        face_grid_search,
        get_face_regimes,
        run_face_suite,
    )
    from benchmark.features import DEFAULT_DETECTOR, DEFAULT_MODEL, ExtractorConfig, load_or_extract
    from benchmark.regimes import custom_regime
    from benchmark.runner import layer_spec
    from fedmtl import mlp, partition
    from fedmtl.errors import ConfigError
    from fedmtl.files import atomic_write

    if not args.dataset:
        raise ConfigError("--suite faces needs --dataset PATH_OR_HUB_ID (a `labeling export` folder)")
    for flag, given in (("--engine flower", getattr(args, "engine", "simulation") != "simulation"),
                        ("--checkpoints", bool(args.checkpoints)), ("--uci-har", bool(args.uci_har))):
        if given:
            raise ConfigError(f"{flag} is not supported by the faces suite")
    if args.clients < 1:
        raise ConfigError(f"--clients must be >= 1, got {args.clients}")
    regimes = get_face_regimes(args.regimes)
    if args.layers:
        regimes.append(custom_regime(args.layers))
    hidden = args.hidden or HIDDEN
    train = _train_config(args, DEFAULT_TRAIN)
    if args.threads is None:
        train = train.replace(threads=os.cpu_count() or 1)
    # as for HAR, a config file states the training settings itself: the per-regime defaults step aside
    config = FaceSuiteConfig(clients=args.clients, tasks=args.tasks, hidden=tuple(hidden), train=train,
                             overrides={} if args.config else dict(DEFAULT_OVERRIDES))
    n_layers = len(hidden) + 1
    for regime in regimes:  # fail before extracting anything
        partition(mlp([2, *hidden, 1]), layer_spec(regime, n_layers))
    extractor = ExtractorConfig(model=args.model or DEFAULT_MODEL, detector=args.detector or DEFAULT_DETECTOR,
                                enforce_detection=args.enforce_detection)
    progress = not args.no_progress
    seeds = list(range(1 if args.quick else args.seeds))
    start = time.perf_counter()
    dataset = load_faces(args.dataset)
    features = load_or_extract(dataset, extractor, cache_dir=args.cache_dir, progress=progress)
    data = build_face_data(dataset, features, config)
    tuning: dict[str, Any] = {}
    if args.grid:
        validation = build_face_data(dataset, features, config, validation=True)
        group = min(len(validation.group(t)) for t in validation.tasks)
        lrs = FACE_GRID_LRS if tuple(args.grid_lrs) == GRID_LRS else args.grid_lrs
        tuning = face_grid_search(validation, regimes, lrs=lrs, local_epochs=args.grid_epochs,
                                  active=_active(args.grid_active, group), seeds=range(args.grid_seeds),
                                  progress=progress)
        atomic_write(Path(args.out) / args.suite / "grid.json", (json.dumps(tuning, indent=2) + "\n").encode())
        data = dataclasses.replace(data, config=dataclasses.replace(
            config, overrides={**config.overrides, **{name: entry["best"] for name, entry in tuning.items()}}))
    summaries = run_face_suite(data, regimes, seeds, progress=progress)
    meta = {"data": dataset.source, "images": {s: len(v.sample_ids) for s, v in dataset.splits.items()},
            "tasks": list(data.tasks), "clients": len(data.clients), "model": extractor.model,
            "detector": extractor.detector, "features": data.sizes[0], "head": list(data.sizes[1:]),
            "features_cached": features.cached, "wall_s": round(time.perf_counter() - start, 1)}
    paths = write_face_leaderboard(args.out, args.suite, summaries, meta)
    print(face_markdown(args.suite, summaries, meta))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
