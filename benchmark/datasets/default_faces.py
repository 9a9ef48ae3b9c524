"""The default face dataset: generated, machine-labelled and exported once, offline, then reused.

``python -m benchmark --suite faces`` without ``--dataset`` runs on this. Three stages, each resumable, in one
folder per (size, generator, labelling sources) under ``<cache>/default-faces/``:

1. ``images/``: ``size`` DCGAN faces (``digiface-dcgan``, the offline default) from the fixed seeds
   ``FIRST_SEED ..``; a killed run keeps the finished PNGs (``generation.generate``).
2. ``labels.sqlite``: machine labels for all five attributes (``labeling.autolabel``: one transaction per batch,
   a rerun skips the faces already labelled).
3. ``export/``: the ``DatasetDict`` with its card (``labeling.export``, with ``min_confidence``: a machine label
   whose own calibrated confidence is below it is left unlabelled, so the task masks it), written under another
   name and renamed when complete: it existing means the dataset is finished, and a later call only returns its
   path.

Size and label policy come from :data:`benchmark.faces.DEFAULT_SETUP` (with the suite's other measured defaults).

``cache_dir`` only says where these folders go; the generator and the labelling models come from their own
caches (``$FEDMTL_CACHE``). The seeds start far above the hand-labelled faces (seeds 0-339, ``data/labels``), so
the faces that measure the machine labels are never in the benchmark's data. The labels are machine-made: the card
says so, and its ``benchmark_notes`` make every leaderboard on it say so too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from benchmark.face_parts import MODEL as FACE_PARTS_MODEL
from benchmark.faces import DEFAULT_SETUP
from fedmtl.errors import ConfigError
from fedmtl.files import atomic_write, cache_root

__all__ = ["MODEL", "DEFAULT_SIZE", "PAPER_SIZE", "FIRST_SEED", "TEST_FRACTION", "MIN_CONFIDENCE",
           "build_default_faces", "default_faces_dir"]

MODEL = FACE_PARTS_MODEL  # the pre-trained layers the suite uses on this dataset unless --model says otherwise
DEFAULT_SIZE = DEFAULT_SETUP.size
MIN_CONFIDENCE = DEFAULT_SETUP.min_confidence
PAPER_SIZE = 13_792  # the paper's generated faces (section V)
FIRST_SEED = 1_000_000
TEST_FRACTION = 0.2
VERSION = 1  # bump when the same inputs should build a different dataset
NETWORK = "digiface-dcgan"
# labeling's measurement of its machine labels on the report split of the hand labels (quoted in card and notes)
ACCURACY_REPORT = Path(__file__).resolve().parents[2] / "data" / "labels" / "machine-accuracy-report.json"


def _sources() -> dict[str, str]:
    from labeling.autolabel import source_names

    return source_names()


def default_faces_dir(size: int | None = None, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the default dataset of ``size`` faces: its name changes with anything that changes its data
    (size, seeds, generator weights, labelling sources and their versions, the export's confidence floor)."""
    from generation.zoo import ZOO

    n = DEFAULT_SIZE if size is None else size
    entry = ZOO[NETWORK]
    key = {"version": VERSION, "size": n, "first_seed": FIRST_SEED, "network": NETWORK,
           "weights": entry.member_sha256 or entry.sha256, "sources": _sources(), "test_fraction": TEST_FRACTION}
    if MIN_CONFIDENCE:  # absent when 0, so datasets built before the floor existed keep their folder
        key["min_confidence"] = MIN_CONFIDENCE
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "default-faces" / f"n{n}-{digest}"


def _accuracy(sources: dict[str, str]) -> dict | None:
    """The shipped measurement of these very sources against hand labels, or None (then no figure is quoted)."""
    if not ACCURACY_REPORT.is_file():
        return None
    from labeling.accuracy import load_accuracy

    report = load_accuracy(ACCURACY_REPORT)
    rows = [r for r in report["rows"] if sources.get(r.get("attribute")) == r.get("source")]
    return {**report, "rows": rows} if rows else None


def _notes(sources: dict[str, str], accuracy: dict | None) -> list[str]:
    by_source: dict[str, list[str]] = {}
    for attribute, source in sources.items():
        by_source.setdefault(source, []).append(attribute)
    made = "; ".join(f"{', '.join(attrs)} by {source}" for source, attrs in by_source.items())
    notes = [f"Labels are machine-made, not checked by people ({made}); scores measure agreement with those "
             "labels, not with the truth."]
    if MIN_CONFIDENCE:
        notes.append(f"A machine label whose calibrated confidence is below {MIN_CONFIDENCE:g} is left unlabelled "
                     "(masked in training and scoring).")
    if accuracy:
        figures = ", ".join(f"{r['attribute']} {r['accuracy']:.1%} (majority class {r['baseline']:.1%})"
                            for r in accuracy["rows"] if r.get("accuracy") is not None)
        notes.append(f"Measured label accuracy against {accuracy.get('people_items', '?')} hand-labelled faces "
                     f"({accuracy.get('split', '?')} split of data/labels): {figures}.")
    return notes


def _add_notes(card: Path, notes: list[str]) -> None:
    """Put ``benchmark_notes`` into the card's YAML front matter (the leaderboard shows them)."""
    text = card.read_text() if card.is_file() else ""
    block = "benchmark_notes:\n" + "".join(f"- {json.dumps(n)}\n" for n in notes)
    if text.startswith("---\n") and "\n---" in text[4:]:
        end = text.index("\n---", 4) + 1
        text = text[:end] + block + text[end:]
    else:
        text = f"---\n{block}---\n{text}"
    atomic_write(card, text.encode())


def build_default_faces(*, size: int | None = None, cache_dir: str | None = None, device: str = "cpu",
                        progress: bool = True) -> Path:
    """Build (or finish building) the default dataset of ``size`` faces (default ``DEFAULT_SIZE``; the paper's is
    ``PAPER_SIZE``) and return its export folder; when it is already complete, only return the path."""
    n = DEFAULT_SIZE if size is None else size
    if isinstance(n, bool) or not isinstance(n, int) or n < 10:
        raise ConfigError(f"default face dataset size {n!r}: must be an integer >= 10")
    root = default_faces_dir(n, cache_dir)
    out = root / "export"
    if (out / "dataset_dict.json").is_file():
        return out

    from generation.networks import load_network
    from generation.sampling import generate
    from labeling.autolabel import autolabel
    from labeling.export import export_dataset
    from labeling.images import load_catalog
    from labeling.store import LabelStore

    images = root / "images"
    net = load_network(NETWORK, progress=progress)  # the generator's own cache, as for every model file
    generate(net, images, range(FIRST_SEED, FIRST_SEED + n), device=device, progress=progress)
    store = LabelStore(root / "labels.sqlite")
    autolabel(images, store, progress=progress)
    staging = root / "export-staging"  # an export killed before the rename is redone over it
    sources = _sources()
    accuracy = _accuracy(sources)
    export_dataset(store, load_catalog(images, progress=progress), staging, test_fraction=TEST_FRACTION, seed=0,
                   progress=progress, accuracy=accuracy, min_confidence=MIN_CONFIDENCE)
    _add_notes(staging / "README.md", _notes(sources, accuracy))
    shutil.rmtree(out, ignore_errors=True)  # only an incomplete one can be here (no dataset_dict.json)
    os.rename(staging, out)
    return out
