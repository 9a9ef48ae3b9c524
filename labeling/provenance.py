"""Who made each label, and which label an export keeps.

Annotators are people (plain names) or models (``model:<source>@<version>``, every label with a confidence); a
model is never counted as a person. The export policy, in order:

1. people first: the majority of the people who labelled the attribute (a "can't tell" majority stays -1; a tie
   is left to the export's tie policy);
2. a model only where no person gave a label: the most confident model answer, if it is not "unsure" and its
   confidence is at least ``min_confidence``;
3. otherwise -1 (unlabelled).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from labeling.agreement import majority
from labeling.attributes import CANT_TELL
from labeling.store import LabelStore

__all__ = ["MODEL_PREFIX", "PEOPLE", "Resolved", "annotations_creators", "is_model", "model_annotator",
           "model_ratings", "people_ratings", "resolve_labels", "source_of"]

MODEL_PREFIX = "model:"
PEOPLE = "people"
TIE = "tie"
NONE = "none"
# The Hugging Face card vocabulary for annotations_creators; people labelling their own data in this app are
# "expert-generated" (the project's annotators, not a paid crowd).
PEOPLE_CREATOR = "expert-generated"
MACHINE_CREATOR = "machine-generated"


def is_model(annotator: str) -> bool:
    return annotator.startswith(MODEL_PREFIX)


def model_annotator(source: str, version: str) -> str:
    return f"{MODEL_PREFIX}{source}@{version}"


def people_ratings(store: LabelStore) -> dict[tuple[str, str], dict[str, int]]:
    """``{(item, attribute): {person: value}}`` from the current labels (models left out)."""
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for label in store.labels():
        if not is_model(label.annotator):
            out[(label.item_id, label.attribute)][label.annotator] = label.value
    return dict(out)


def model_ratings(store: LabelStore, *, with_sure: bool = False) -> dict[tuple[str, str], dict[str, tuple]]:
    """``{(item, attribute): {model: (value, confidence)}}`` (``(value, confidence, sure)`` with ``with_sure``)."""
    out: dict[tuple[str, str], dict[str, tuple]] = defaultdict(dict)
    for label in store.labels():
        if is_model(label.annotator):
            row = (label.value, float(label.confidence or 0.0))
            out[(label.item_id, label.attribute)][label.annotator] = (*row, bool(label.sure)) if with_sure else row
    return dict(out)


@dataclass(frozen=True)
class Resolved:
    """The exported value of one (item, attribute), where it came from and how sure that source was."""

    value: int  # -1: unlabelled, can't tell or tie
    source: str  # "people", a model annotator, "tie" or "none"
    confidence: float  # people: share of people agreeing with the majority; model: its confidence; else 0


def resolve_labels(store: LabelStore, min_confidence: float = 0.0) -> dict[tuple[str, str], Resolved]:
    """Every labelled (item, attribute) resolved by the module's policy."""
    people, models = people_ratings(store), model_ratings(store)
    out: dict[tuple[str, str], Resolved] = {}
    for key, votes in people.items():
        values = list(votes.values())
        winner = majority(values)
        if winner is None:
            out[key] = Resolved(CANT_TELL, TIE, 0.0)
        else:
            out[key] = Resolved(winner, PEOPLE, Counter(values)[winner] / len(values))
    for key, answers in models.items():
        if key in out:
            continue
        source, (value, confidence) = max(answers.items(), key=lambda kv: (kv[1][0] != CANT_TELL, kv[1][1], kv[0]))
        if value != CANT_TELL and confidence >= min_confidence:
            out[key] = Resolved(value, source, confidence)
        else:
            out[key] = Resolved(CANT_TELL, NONE, 0.0)
    return out


def source_of(resolved: Resolved) -> str:
    """The card's word for a label's origin: ``people``, the model annotator, or ``unlabelled``."""
    return resolved.source if resolved.value != CANT_TELL or resolved.source == PEOPLE else "unlabelled"


def annotations_creators(sources: Counter) -> list[str]:
    """The Hugging Face ``annotations_creators`` values for labels that came from these sources."""
    kinds = []
    if sources.get(PEOPLE, 0):
        kinds.append(PEOPLE_CREATOR)
    if any(n for s, n in sources.items() if is_model(s)):
        kinds.append(MACHINE_CREATOR)
    return kinds or ["no-annotation"]
