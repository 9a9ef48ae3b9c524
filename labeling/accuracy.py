"""How good the machine labels are: each model source against people's labels, per attribute.

Faces people labelled are split once, by a hash of the item id, into a ``tune`` half (used to choose thresholds
and fit the shipped classifiers) and a ``report`` half (used only to report). Per attribute and source the report
gives coverage (share of faces the source answered), accuracy on those, the majority-class baseline (always
answering people's most common value), and the share and accuracy of the answers the source marks as sure.
Truth is people's majority; faces whose people answered "can't tell" or tied are left out.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labeling.agreement import resolve
from labeling.attributes import CANT_TELL
from labeling.errors import LabelingError
from labeling.provenance import model_ratings, people_ratings
from labeling.store import LabelStore

__all__ = ["AccuracyReport", "AccuracyRow", "SPLITS", "accuracy_report", "format_accuracy", "load_accuracy",
           "read_splits", "split_of"]

SPLITS = ("tune", "report", "all")


def split_of(item_id: str) -> str:
    """``tune`` or ``report``: a fixed half of the items each, by the first byte of SHA-256(item id)."""
    return "tune" if hashlib.sha256(item_id.encode()).digest()[0] < 128 else "report"


@dataclass(frozen=True)
class AccuracyRow:
    attribute: str
    source: str
    items: int  # faces with a people majority (not can't tell)
    coverage: float | None  # share the source answered
    accuracy: float | None  # on the answered ones
    baseline: float | None  # always people's most common value
    sure_share: float | None  # share of the items answered as sure
    sure_accuracy: float | None


@dataclass(frozen=True)
class AccuracyReport:
    split: str
    people_items: int
    rows: list[AccuracyRow]

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, "people_items": self.people_items, "rows": [asdict(r) for r in self.rows]}


def _share(k: int, n: int) -> float | None:
    return k / n if n else None


def read_splits(path: str | Path) -> dict[str, str]:
    """``{sample_id: split}`` from a JSONL file whose rows carry ``sample_id`` and ``split`` (tune or report)."""
    path = Path(path)
    out = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise LabelingError(f"{path}: cannot read the split file ({exc.strerror or exc})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            sample, split = str(row["sample_id"]), row["split"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LabelingError(f"{path}:{lineno}: expected a JSON object with 'sample_id' and 'split'") from None
        if split not in ("tune", "report"):
            raise LabelingError(f"{path}:{lineno}: split {split!r} is not 'tune' or 'report'")
        out[sample] = split
    return out


def accuracy_report(store: LabelStore, split: str = "report", splits: dict[str, str] | None = None) -> AccuracyReport:
    """Each model source against people's labels on ``split`` (see the module docstring).

    "Sure" is what each model stored with its answer. ``splits`` (``{item: split}``, e.g. from ``read_splits``)
    overrides the hash rule for the items it names.
    """
    if split not in SPLITS:
        raise LabelingError(f"unknown split {split!r} (expected one of {SPLITS})")
    truth, _ = resolve(people_ratings(store))
    splits = splits or {}
    truth = {k: v for k, v in truth.items()
             if v != CANT_TELL and (split == "all" or splits.get(k[0], split_of(k[0])) == split)}
    answers: dict[tuple[str, str], list[tuple[int, int, bool]]] = defaultdict(list)
    for key, by_model in model_ratings(store, with_sure=True).items():
        if key in truth:
            for model, (value, _, sure) in by_model.items():
                answers[(key[1], model)].append((truth[key], value, sure))
    rows = []
    for attribute in store.attributes:
        labelled = [v for (_, name), v in truth.items() if name == attribute.name]
        baseline = _share(Counter(labelled).most_common(1)[0][1], len(labelled)) if labelled else None
        for (name, model), rows_ in sorted(answers.items()):
            if name != attribute.name:
                continue
            n = len(labelled)
            answered = [(t, v, c) for t, v, c in rows_ if v != CANT_TELL]
            sure_rows = [(t, v) for t, v, ok in answered if ok]
            rows.append(AccuracyRow(name, model, n, _share(len(answered), n),
                                    _share(sum(t == v for t, v, _ in answered), len(answered)), baseline,
                                    _share(len(sure_rows), n), _share(sum(t == v for t, v in sure_rows),
                                                                      len(sure_rows))))
    people_items = len({item for item, _ in truth})
    return AccuracyReport(split, people_items, rows)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def format_accuracy(report: AccuracyReport) -> str:
    """A Markdown table (terminal and README)."""
    lines = [f"Machine labels vs people's majority, split '{report.split}' ({report.people_items} faces)", "",
             "| attribute | source | faces | coverage | accuracy | majority baseline | sure share | sure accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        lines.append(f"| {r.attribute} | {r.source} | {r.items} | {_pct(r.coverage)} | {_pct(r.accuracy)} | "
                     f"{_pct(r.baseline)} | {_pct(r.sure_share)} | {_pct(r.sure_accuracy)} |")
    return "\n".join(lines)


def load_accuracy(path: str | Path) -> dict[str, Any]:
    """An accuracy report written by ``python -m labeling accuracy --out FILE``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabelingError(f"{path}: no such accuracy report") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelingError(f"{path}: not a JSON accuracy report ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise LabelingError(f"{path}: not an accuracy report (expected 'split', 'people_items', 'rows')")
    return data
