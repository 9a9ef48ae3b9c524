"""Label statistics: the paper's Table II distribution, progress per annotator, agreement, conflicts."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from labeling.agreement import cohen_kappa, krippendorff_alpha, resolve
from labeling.store import LabelStore

__all__ = ["Stats", "compute_stats", "format_stats", "ratings_by_item"]


@dataclass
class Stats:
    total_items: int
    distribution: dict[str, dict[str, int]]  # attribute -> value name (and "unlabelled", "tie") -> items
    annotators: dict[str, dict[str, int]]  # annotator -> {"labels", "items", "complete", "skipped", "flagged"}
    agreement: dict[str, dict[str, Any]]  # attribute -> {"measure", "value", "items"}
    conflicts: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)  # (item, attribute, votes)

    def as_dict(self) -> dict[str, Any]:
        return {"total_items": self.total_items, "distribution": self.distribution, "annotators": self.annotators,
                "agreement": {k: {**v, "value": None if math.isnan(v["value"]) else v["value"]}
                              for k, v in self.agreement.items()},
                "conflicts": [{"item": i, "attribute": a, "votes": v} for i, a, v in self.conflicts]}


def ratings_by_item(store: LabelStore) -> dict[tuple[str, str], dict[str, int]]:
    """``{(item, attribute): {annotator: value}}`` from the current labels."""
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for label in store.labels():
        out[(label.item_id, label.attribute)][label.annotator] = label.value
    return dict(out)


def compute_stats(store: LabelStore) -> Stats:
    ratings = ratings_by_item(store)
    resolved, ties = resolve(ratings)
    items = store.items()
    annotators = store.annotators()
    distribution = {}
    for attribute in store.attributes:
        counts = dict.fromkeys(attribute.values, 0)
        for item in items:
            value = resolved.get((item, attribute.name))
            if value is not None:
                counts[attribute.values[value]] += 1
        tied = sum(1 for item, name, _ in ties if name == attribute.name)
        counts["tie"] = tied
        counts["unlabelled"] = len(items) - sum(counts[v] for v in attribute.values) - tied
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
    return Stats(len(items), distribution, per_annotator, agreement, conflicts)


def format_stats(stats: Stats, store: LabelStore) -> str:
    """Plain-text tables for the terminal."""
    lines = [f"items: {stats.total_items}", "", "Label distribution (majority over annotators; Table II style)"]
    lines.append(f"{'attribute':<12} {'value 0':>22} {'value 1':>22} {'tie':>5} {'unlabelled':>11}")
    for attribute in store.attributes:
        counts = stats.distribution[attribute.name]
        cells = [f"{v}={counts[v]}" for v in attribute.values]
        lines.append(f"{attribute.name:<12} {cells[0]:>22} {' '.join(cells[1:]):>22} {counts['tie']:>5} "
                     f"{counts['unlabelled']:>11}")
    lines += ["", "Progress per annotator", f"{'annotator':<16} {'labels':>7} {'items':>6} {'complete':>9} "
              f"{'skipped':>8} {'flagged':>8}"]
    for name, row in stats.annotators.items():
        lines.append(f"{name:<16} {row['labels']:>7} {row['items']:>6} {row['complete']:>9} {row['skipped']:>8} "
                     f"{row['flagged']:>8}")
    lines += ["", "Agreement per attribute (items rated by two or more annotators)"]
    for name, row in stats.agreement.items():
        value = "n/a" if math.isnan(row["value"]) else f"{row['value']:.3f}"
        lines.append(f"{name:<12} {row['measure']:<19} {value:>6}  over {row['items']} items")
    lines += ["", f"Items in conflict: {len(stats.conflicts)}"]
    for item, name, votes in stats.conflicts[:50]:
        lines.append(f"  {item} {name}: " + ", ".join(f"{a}={v}" for a, v in sorted(votes.items())))
    if len(stats.conflicts) > 50:
        lines.append(f"  ... {len(stats.conflicts) - 50} more (use --json)")
    return "\n".join(lines)
