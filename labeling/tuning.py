"""Fit the shipped calibration and classifiers (``labeling/sources/tuned.json``) on the tuning split only.

    python -m labeling.tuning --images FACES --labels data/labels/digiface-dcgan-human.jsonl

``--labels`` rows name a face (``sample_id``), people's ``labels`` (-1 = can't tell, left out) and a ``split``;
only rows whose split is ``tune`` are read. Per attribute:

* gender: Platt scaling of the network's P(female) logit;
* age group: the expected-age threshold stays ``ADULT_AGE`` (the tuning faces hold no child), scale as shipped;
* glasses, pose, teeth: a standardised L2 logistic regression over the feature groups in ``CANDIDATES``; the
  groups and the strength are chosen by 5-fold cross-validated accuracy, and the Platt scaling and "sure"
  threshold are fitted on the cross-validated probabilities (never on the training fit).

The "sure" threshold is the lowest confidence at which the cross-validated answers at or above it are right at
least ``SURE_TARGET`` of the time (1.0, never sure, when no threshold gets there).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from fedmtl.files import atomic_write
from labeling.errors import LabelingError
from labeling.sources.faceattr import FEATURE_GROUPS, TUNED_FILE, face_features
from labeling.sources.faceview import view_face

__all__ = ["CANDIDATES", "SURE_TARGET", "fit_tuned", "main", "sure_threshold"]

SURE_TARGET = 0.9
MIN_SURE = 10  # answers a threshold must keep to count
# Feature groups tried per attribute: the 128-d embedding costs ~10x the rest of a face, so it is offered only
# where the cheap groups measured clearly worse (glasses).
CANDIDATES = {
    "glasses": (("embedding",), ("geometry", "eyes"), ("eyes", "chip"), ("cues", "embedding")),
    "pose": (("cues",), ("geometry", "cues"), ("geometry",)),
    "teeth": (("cues",), ("geometry", "cues"), ("geometry", "cues", "chip"), ("mouth",), ("cues", "mouth"),
              ("geometry", "cues", "mouth")),
}
STRENGTHS = (0.01, 0.1, 1.0)


def sure_threshold(confidence: np.ndarray, correct: np.ndarray, target: float = SURE_TARGET) -> float:
    """The lowest confidence whose answers at or above it are right at least ``target`` of the time."""
    for t in sorted(set(np.round(confidence, 4))):
        keep = confidence >= t
        if keep.sum() >= MIN_SURE and correct[keep].mean() >= target:
            return float(t)
    return 1.0


def _platt(logit: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=100.0).fit(logit.reshape(-1, 1), y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _cv_logits(x: np.ndarray, y: np.ndarray, strength: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=5000))
    folds = StratifiedKFold(min(5, int(np.bincount(y).min())), shuffle=True, random_state=0)
    return cross_val_predict(clf, x, y, cv=folds, method="decision_function")


def _classifier(features: dict[str, np.ndarray], y: np.ndarray, candidates: tuple) -> dict:
    from sklearn.linear_model import LogisticRegression

    best = None
    for groups in candidates:
        x = np.hstack([features[g] for g in groups])
        for strength in STRENGTHS:
            logits = _cv_logits(x, y, strength)
            accuracy = float(((logits >= 0) == y).mean())
            if best is None or accuracy > best[0] + 1e-9:
                best = (accuracy, groups, strength, logits)
    accuracy, groups, strength, logits = best
    x = np.hstack([features[g] for g in groups])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=strength, max_iter=5000).fit((x - mean) / scale, y)
    a, b = _platt(logits, y)
    p = 1 / (1 + np.exp(-(a * logits + b)))
    confidence = np.maximum(p, 1 - p)
    sure = sure_threshold(confidence, (p >= 0.5) == y)
    return {"groups": list(groups), "strength": strength, "mean": mean.tolist(), "scale": scale.tolist(),
            "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0]), "platt_a": a, "platt_b": b,
            "sure": sure, "cv_accuracy": accuracy, "tune_items": int(len(y)), "tune_positives": int(y.sum())}


def fit_tuned(images: Path, rows: list[dict], version: str) -> dict:
    """The tuned.json content from the tuning rows (faces read from ``images``)."""
    from labeling.sources.agegender import age_gender_scores

    tune = [r for r in rows if r.get("split") == "tune"]
    if not tune:
        raise LabelingError("no rows with split 'tune' in the labels file")
    feats: dict[str, list] = {g: [] for g in FEATURE_GROUPS}
    p_female = []
    for r in tune:
        face = view_face(images / f"{r['sample_id']}.png")
        for g, v in face_features(face).items():
            feats[g].append(v)
        p_female.append(age_gender_scores(face).p_female)
    features = {g: np.array(v) for g, v in feats.items()}
    out: dict = {"version": version, "fitted_on": f"{len(tune)} faces of the tune split", "attributes": {}}
    y_all = {a: np.array([r["labels"].get(a, -1) for r in tune]) for a in ("gender", *CANDIDATES)}
    known = y_all["gender"] >= 0
    p = np.clip(np.array(p_female)[known], 1e-6, 1 - 1e-6)
    logit, y = np.log(p / (1 - p)), y_all["gender"][known]
    a, b = _platt(logit, y)
    q = 1 / (1 + np.exp(-(a * logit + b)))
    out["attributes"]["gender"] = {"platt_a": a, "platt_b": b, "tune_items": int(known.sum()),
                                   "sure": sure_threshold(np.maximum(q, 1 - q), (q >= 0.5) == y)}
    out["attributes"]["age_group"] = {"sure": SURE_TARGET, "note": "no child among the tuning faces: not fitted"}
    for name in CANDIDATES:
        known = y_all[name] >= 0
        out["attributes"][name] = _classifier({g: v[known] for g, v in features.items()}, y_all[name][known],
                                              CANDIDATES[name])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labeling.tuning", description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder with the faces (sample_id.png)")
    parser.add_argument("--labels", required=True, help="JSONL of people's labels with a 'split' per row")
    parser.add_argument("--version", required=True, help="version tag of the sources (bump on every refit)")
    parser.add_argument("--out", default=str(TUNED_FILE))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        rows = [json.loads(line) for line in Path(args.labels).read_text().splitlines() if line.strip()]
        tuned = fit_tuned(Path(args.images), rows, args.version)
    except (LabelingError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write(args.out, (json.dumps(tuned, indent=1) + "\n").encode())
    for name, spec in tuned["attributes"].items():
        print(name, {k: v for k, v in spec.items() if k not in ("mean", "scale", "coef")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
