"""Label statistics: the paper's Table II distribution, progress per annotator, agreement, conflicts.

People and models are kept apart: the distribution, people-people agreement and conflicts use people's labels
only; each model is compared with people (percentage agreement and Cohen's kappa over the items both labelled);
and the share of pre-selected suggestions that people changed is reported per attribute (an automation-bias
figure: a low rate with a weak model means people accept what they are shown). "Can't tell" (-1) is counted
in the distribution and is a category of its own in agreement.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from labeling.agreement import cohen_kappa, krippendorff_alpha, resolve
from labeling.attributes import CANT_TELL, CANT_TELL_NAME
from labeling.provenance import is_model, model_ratings, people_ratings
from labeling.store import LabelStore

__all__ = ["Stats", "compute_stats", "format_stats", "ratings_by_item"]


def _nan_to_none(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class Stats:
    total_items: int
    distribution: dict[str, dict[str, int]]  # attribute -> value name ("cant_tell", "unlabelled", "tie") -> items
    annotators: dict[str, dict[str, int]]  # annotator -> {"labels", "items", "complete", "skipped", "flagged"}
    agreement: dict[str, dict[str, Any]]  # attribute -> {"measure", "value", "items"} (people only)
    conflicts: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)  # (item, attribute, votes)
    model_agreement: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # attr -> model -> row
    suggestion_changes: dict[str, dict[str, Any]] = field(default_factory=dict)  # attr -> {shown, changed, rate}

    def as_dict(self) -> dict[str, Any]:
        return {"total_items": self.total_items, "distribution": self.distribution, "annotators": self.annotators,
                "agreement": {k: {**v, "value": _nan_to_none(v["value"])} for k, v in self.agreement.items()},
                "people_vs_models": {a: {m: {k: _nan_to_none(v) for k, v in row.items()} for m, row in rows.items()}
                                     for a, rows in self.model_agreement.items()},
                "suggestion_changes": self.suggestion_changes,
                "conflicts": [{"item": i, "attribute": a, "votes": v} for i, a, v in self.conflicts]}


def ratings_by_item(store: LabelStore) -> dict[tuple[str, str], dict[str, int]]:
    """``{(item, attribute): {person: value}}`` from the current labels of people (models are not votes)."""
    return people_ratings(store)


def _model_agreement(store: LabelStore, people: dict) -> dict[str, dict[str, dict[str, Any]]]:
    resolved, _ = resolve(people)
    out: dict[str, dict[str, dict[str, Any]]] = {a.name: {} for a in store.attributes}
    pairs: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for (item, name), answers in model_ratings(store).items():
        truth = resolved.get((item, name))
        if truth is None or truth == CANT_TELL:
            continue
        for model, (value, _) in answers.items():
            pairs[(name, model)].append((truth, value))
    for (name, model), rows in sorted(pairs.items()):
        answered = [(t, v) for t, v in rows if v != CANT_TELL]
        agree = sum(t == v for t, v in answered)
        out[name][model] = {"items": len(rows), "answered": len(answered),
                            "agreement": agree / len(answered) if answered else math.nan,
                            "kappa": cohen_kappa([t for t, _ in answered], [v for _, v in answered])}
    return out


def _suggestion_changes(store: LabelStore) -> dict[str, dict[str, Any]]:
    given = {}
    for row in store.history():
        _, save_id, item, annotator, attribute, value, _, undone = row
        if not undone and not is_model(annotator):
            given[(save_id, item, attribute)] = value
    out = {a.name: {"shown": 0, "changed": 0, "rate": None} for a in store.attributes}
    for shown in store.shown():
        value = given.get((shown.save_id, shown.item_id, shown.attribute))
        if value is None or shown.attribute not in out:
            continue
        row = out[shown.attribute]
        row["shown"] += 1
        row["changed"] += int(value != shown.value)
    for row in out.values():
        row["rate"] = row["changed"] / row["shown"] if row["shown"] else None
    return out


def compute_stats(store: LabelStore) -> Stats:
    ratings = ratings_by_item(store)
    resolved, ties = resolve(ratings)
    items = store.items()
    annotators = store.annotators()
    distribution = {}
    for attribute in store.attributes:
        counts = dict.fromkeys((*attribute.values, CANT_TELL_NAME), 0)
        for item in items:
            value = resolved.get((item, attribute.name))
            if value is not None:
                counts[attribute.label_of(value)] += 1
        tied = sum(1 for item, name, _ in ties if name == attribute.name)
        counts["tie"] = tied
        counts["unlabelled"] = len(items) - sum(counts[v] for v in (*attribute.values, CANT_TELL_NAME)) - tied
        distribution[attribute.name] = counts
    per_annotator = {}
    labels = store.labels()
    for name in annotators:
        mine = [label for label in labels if label.annotator == name]
        per_annotator[name] = {"labels": len(mine), "items": len({label.item_id for label in mine}),
                               "complete": len(store.complete_items(name)),
                               "skipped": len(store.marked(name, "skip")), "flagged": len(store.marked(name, "flag"))}
    agreement = {}
    for attribute in store.attributes:
        shared = [votes for (item, name), votes in ratings.items() if name == attribute.name and len(votes) >= 2]
        raters = sorted({a for votes in shared for a in votes})
        if len(raters) == 2:
            a, b = raters
            agreement[attribute.name] = {"measure": "cohen_kappa", "items": len(shared),
                                         "value": cohen_kappa([v[a] for v in shared], [v[b] for v in shared])}
        else:
            agreement[attribute.name] = {"measure": "krippendorff_alpha", "items": len(shared),
                                         "value": krippendorff_alpha(list(v.values()) for v in shared)}
    conflicts = sorted((item, name, votes) for (item, name), votes in ratings.items() if len(set(votes.values())) > 1)
    return Stats(len(items), distribution, per_annotator, agreement, conflicts, _model_agreement(store, ratings),
                 _suggestion_changes(store))


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def format_stats(stats: Stats, store: LabelStore) -> str:
    """Plain-text tables for the terminal."""
    lines = [f"items: {stats.total_items}", "",
             "Label distribution (majority over people; Table II style; models not counted)"]
    lines.append(f"{'attribute':<12} {'value 0':>22} {'value 1':>22} {'cant_tell':>10} {'tie':>5} {'unlabelled':>11}")
    for attribute in store.attributes:
        counts = stats.distribution[attribute.name]
        cells = [f"{v}={counts[v]}" for v in attribute.values]
        lines.append(f"{attribute.name:<12} {cells[0]:>22} {' '.join(cells[1:]):>22} {counts[CANT_TELL_NAME]:>10} "
                     f"{counts['tie']:>5} {counts['unlabelled']:>11}")
    lines += ["", "Progress per annotator (models are model:<source>@<version>)",
              f"{'annotator':<34} {'labels':>7} {'items':>6} {'complete':>9} {'skipped':>8} {'flagged':>8}"]
    for name, row in stats.annotators.items():
        lines.append(f"{name:<34} {row['labels']:>7} {row['items']:>6} {row['complete']:>9} {row['skipped']:>8} "
                     f"{row['flagged']:>8}")
    lines += ["", "Agreement between people per attribute (items rated by two or more people)"]
    for name, row in stats.agreement.items():
        lines.append(f"{name:<12} {row['measure']:<19} {_fmt(row['value']):>6}  over {row['items']} items")
    lines += ["", "People vs each model (items with a people majority; agreement over the model's answers)"]
    for name, rows in stats.model_agreement.items():
        for model, row in rows.items():
            lines.append(f"{name:<12} {model:<34} agreement {_fmt(row['agreement'], '{:.1%}'):>6}  kappa "
                         f"{_fmt(row['kappa']):>6}  answered {row['answered']}/{row['items']}")
    lines += ["", "Pre-selected suggestions people changed (automation-bias check)"]
    for name, row in stats.suggestion_changes.items():
        lines.append(f"{name:<12} changed {row['changed']:>5} of {row['shown']:>5} shown  "
                     f"({_fmt(row['rate'], '{:.1%}')})")
    lines += ["", f"Items in conflict: {len(stats.conflicts)}"]
    for item, name, votes in stats.conflicts[:50]:
        lines.append(f"  {item} {name}: " + ", ".join(f"{a}={v}" for a, v in sorted(votes.items())))
    if len(stats.conflicts) > 50:
        lines.append(f"  ... {len(stats.conflicts) - 50} more (use --json)")
    return "\n".join(lines)
