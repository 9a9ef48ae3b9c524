"""Labelled face datasets as ``labeling export`` writes them: a ``DatasetDict`` with ``train`` and ``test``.

Columns: ``image`` (encoded bytes), ``sample_id``, ``seed``, ``network`` and one binary ``ClassLabel`` per
attribute with -1 for "not labelled" (the paper's five: gender, age_group, glasses, pose, teeth). Accepted
sources: a ``save_to_disk`` folder, a folder of ``data/<split>-*.parquet`` shards (an export's Hub layout), or a
Hub dataset id (needs internet). Every attribute column that is a two-class ``ClassLabel`` becomes a task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmtl.errors import DatasetError

__all__ = ["PAPER_ATTRIBUTES", "SPLITS", "FaceSplit", "FaceDataset", "load_faces", "from_dataset_dict", "card_notes"]

PAPER_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "gender": ("male", "female"),
    "age_group": ("child", "adult"),
    "glasses": ("not_wearing", "wearing"),
    "pose": ("sideways", "front_facing"),
    "teeth": ("not_showing", "showing"),
}
SPLITS = ("train", "test")
_META_COLUMNS = ("image", "sample_id", "seed", "network")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class FaceSplit:
    sample_ids: tuple[str, ...]
    images: tuple[bytes, ...]  # encoded (PNG/JPEG) bytes, as stored
    labels: np.ndarray  # int64 [N, tasks], -1 = not labelled


@dataclass(frozen=True)
class FaceDataset:
    """A face dataset's splits, its binary tasks and a fingerprint of its images (what features depend on)."""

    source: str
    tasks: tuple[str, ...]
    class_names: dict[str, tuple[str, str]]
    splits: dict[str, FaceSplit]
    fingerprint: str
    notes: tuple[str, ...] = ()  # sentences the dataset asks every leaderboard on it to show (its card's)

    def labelled(self, split: str, task: str) -> int:
        return int((self.splits[split].labels[:, self.tasks.index(task)] >= 0).sum())


def _image_bytes(value: object, source: str, split: str, row: int) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path") and Path(value["path"]).is_file():
            return Path(value["path"]).read_bytes()
    raise DatasetError(f"dataset {source}: {split} row {row} has no image bytes")


def from_dataset_dict(dd: object, source: str) -> FaceDataset:
    """Validate a loaded ``DatasetDict`` against the export contract and pull out images, ids and labels."""
    import datasets

    if not isinstance(dd, datasets.DatasetDict):
        raise DatasetError(f"dataset {source}: expected a DatasetDict with splits train and test, "
                           f"got {type(dd).__name__}")
    missing = [s for s in SPLITS if s not in dd]
    if missing:
        raise DatasetError(f"dataset {source}: split {missing[0]!r} is missing (has {', '.join(dd) or 'none'})")
    features = dd["train"].features
    for column in ("image", "sample_id"):
        if column not in features:
            raise DatasetError(f"dataset {source}: column {column!r} is missing")
    tasks: list[str] = []
    names: dict[str, tuple[str, str]] = {}
    for column, feature in features.items():
        if column in _META_COLUMNS:
            continue
        if not isinstance(feature, datasets.ClassLabel):
            continue
        if feature.num_classes != 2:
            raise DatasetError(f"dataset {source}: attribute {column!r} has {feature.num_classes} classes; the face "
                               "suite trains binary (sigmoid) tasks only")
        expected = PAPER_ATTRIBUTES.get(column)
        if expected and tuple(feature.names) != expected:
            raise DatasetError(f"dataset {source}: attribute {column!r} has class names {feature.names}, "
                               f"expected {list(expected)}")
        tasks.append(column)
        names[column] = (feature.names[0], feature.names[1])
    if not tasks:
        raise DatasetError(f"dataset {source}: no binary ClassLabel attribute column (e.g. "
                           f"{', '.join(PAPER_ATTRIBUTES)})")
    order = [t for t in PAPER_ATTRIBUTES if t in tasks] + [t for t in tasks if t not in PAPER_ATTRIBUTES]
    digest = hashlib.sha256()
    splits: dict[str, FaceSplit] = {}
    seen: set[str] = set()
    for split in SPLITS:
        ds = dd[split]
        if ds.features != features:
            raise DatasetError(f"dataset {source}: split {split!r} has other columns than 'train'")
        raw = ds.cast_column("image", datasets.Image(decode=False))
        ids = tuple(str(v) for v in raw["sample_id"])
        dup = seen.intersection(ids) or ({i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set())
        if dup:
            raise DatasetError(f"dataset {source}: sample_id {sorted(dup)[0]!r} appears twice")
        seen.update(ids)
        images = tuple(_image_bytes(v, source, split, i) for i, v in enumerate(raw["image"]))
        labels = np.stack([np.asarray(raw[t], dtype=np.int64) for t in order], axis=1) if len(raw) else \
            np.zeros((0, len(order)), dtype=np.int64)
        bad = ~np.isin(labels, (-1, 0, 1))
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            raise DatasetError(f"dataset {source}: {split} row {row} has {order[col]}={labels[row, col]} "
                               "(expected -1, 0 or 1)")
        for sid, image in zip(ids, images, strict=True):
            digest.update(f"{split}\0{sid}\0{len(image)}\0".encode())
            digest.update(image)
        splits[split] = FaceSplit(ids, images, labels)
    if not splits["train"].sample_ids:
        raise DatasetError(f"dataset {source}: the train split is empty")
    return FaceDataset(source, tuple(order), {t: names[t] for t in order}, splits, digest.hexdigest()[:24])


def load_faces(path_or_id: str | os.PathLike[str]) -> FaceDataset:
    """Load an exported face dataset from a folder (``save_to_disk`` or Parquet shards) or a Hub id."""
    import datasets

    source = str(path_or_id)
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            if (path / "dataset_dict.json").is_file():
                dd = datasets.load_from_disk(str(path))
            else:
                shards = {s: sorted(str(p) for p in (path / "data").glob(f"{s}-*.parquet")) for s in SPLITS}
                if not all(shards.values()):
                    raise DatasetError(f"dataset {source}: not a DatasetDict folder (no dataset_dict.json) and no "
                                       "data/train-*.parquet + data/test-*.parquet shards")
                dd = datasets.load_dataset("parquet", data_files=shards)
        elif path.exists():
            raise DatasetError(f"dataset {source}: is a file; give the export folder or a Hub dataset id")
        elif _HUB_ID.match(source) and not source.startswith((".", "/", "~")):
            dd = datasets.load_dataset(source)
        else:
            raise DatasetError(f"dataset {source}: no such folder (and not a Hub id like owner/name)")
    except DatasetError:
        raise
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ConnectionError, ArrowInvalid...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatasetError(f"dataset {source}: cannot load it ({type(exc).__name__}: {first})") from None
    dataset = from_dataset_dict(dd, source)
    if path.is_dir():
        dataset = dataclasses.replace(dataset, notes=card_notes(path / "README.md"))
    return dataset


def card_notes(card: Path) -> tuple[str, ...]:
    """``benchmark_notes`` from a dataset card's YAML front matter: a list of sentences a leaderboard on this
    dataset must show (e.g. that its labels are machine-made, and how accurate they measured). A card without
    the key, or without front matter, has none; a key that is not a list of strings is an error naming it."""
    import yaml

    try:
        text = card.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return ()
    if not text.startswith("---"):
        return ()
    front = text.split("\n---", 1)[0].removeprefix("---")
    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError as exc:
        raise DatasetError(f"dataset card {card}: its YAML front matter is unreadable ({exc})") from None
    notes = meta.get("benchmark_notes", []) if isinstance(meta, dict) else []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise DatasetError(f"dataset card {card}: benchmark_notes must be a list of strings")
    return tuple(n.strip() for n in notes if n.strip())
