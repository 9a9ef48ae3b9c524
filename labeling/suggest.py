"""Label suggestions shown pre-selected in the app, each with a confidence.

The app's main source is the machine labels of ``labeling.machine`` (all five attributes; the landmark cues for
pose and teeth live in ``labeling.sources.faceattr``). This module keeps the older helpers it can add to them:

* deepface ``analyze`` for gender and age group, only when its weights are already under ``DEEPFACE_HOME``
  (it would download them otherwise); off with a one-line notice when they are not.
* an active learner: one logistic regression per attribute on cheap image features (16x16 grey thumbnail plus a
  4x4 colour grid), trained on the labels given so far; its least certain items are offered first.
"""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from labeling.agreement import resolve
from labeling.attributes import AttributeSet
from labeling.stats import ratings_by_item
from labeling.store import LabelStore

__all__ = ["ActiveLearner", "Suggestion", "deepface_available", "image_features", "LOW_CONFIDENCE"]

LOW_CONFIDENCE = 0.75


@dataclass(frozen=True)
class Suggestion:
    value: int
    confidence: float
    source: str
    sure: bool | None = None  # machine labels say whether they reached their tuned threshold

    @property
    def low(self) -> bool:
        return not self.sure if self.sure is not None else self.confidence < LOW_CONFIDENCE


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- cheap features + active learning --------------------------------------------------------------------------
def image_features(path: str | Path) -> np.ndarray:
    """A 304-vector: 16x16 grey thumbnail and 4x4 RGB means, scaled to [0, 1]."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        grey = np.asarray(rgb.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32).ravel()
        colour = np.asarray(rgb.resize((4, 4), Image.BOX), dtype=np.float32).ravel()
    return np.concatenate([grey, colour]) / 255.0


class ActiveLearner:
    """Per-attribute logistic regression over ``image_features``, refit on the resolved labels on demand."""

    def __init__(self, attributes: AttributeSet, features: dict[str, np.ndarray], min_per_class: int = 3) -> None:
        self.attributes = attributes
        self.features = features
        self.min_per_class = min_per_class
        self.models: dict[str, object] = {}
        self.trained_on = -1
        self._lock = threading.Lock()

    def fit(self, store: LabelStore) -> bool:
        """Refit on the store's current labels; returns False (and keeps the old models) if another fit runs."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            resolved, _ = resolve(ratings_by_item(store))
            models = {}
            for attribute in self.attributes:
                pairs = [(item, v) for (item, name), v in resolved.items()
                         if name == attribute.name and item in self.features and v >= 0]  # not "can't tell"
                counts = np.bincount([v for _, v in pairs], minlength=len(attribute.values))
                if (counts >= self.min_per_class).sum() < 2:
                    continue
                from sklearn.linear_model import LogisticRegression  # only once there is something to learn

                x = np.stack([self.features[item] for item, _ in pairs])
                y = np.array([v for _, v in pairs])
                models[attribute.name] = LogisticRegression(C=1.0, solver="liblinear").fit(x, y)
            self.models = models
            self.trained_on = len(resolved)
            return True
        finally:
            self._lock.release()

    def predict(self, item_ids: Sequence[str]) -> dict[str, dict[str, Suggestion]]:
        """``{item: {attribute: Suggestion}}`` for the attributes with a trained model."""
        known = [i for i in item_ids if i in self.features]
        out: dict[str, dict[str, Suggestion]] = {i: {} for i in known}
        if not known:
            return out
        x = np.stack([self.features[i] for i in known])
        for name, model in self.models.items():
            proba = model.predict_proba(x)
            for row, item in zip(proba, known, strict=True):
                k = int(row.argmax())
                out[item][name] = Suggestion(int(model.classes_[k]), float(row[k]), "classifier")
        return out

    def order(self, item_ids: Sequence[str]) -> list[str]:
        """Least certain first (lowest confidence over the trained attributes); input order when untrained."""
        if not self.models:
            return list(item_ids)
        predictions = self.predict(item_ids)
        rank = {i: min((s.confidence for s in predictions.get(i, {}).values()), default=1.0) for i in item_ids}
        return sorted(item_ids, key=lambda i: rank[i])  # stable: ties keep input order


# -- deepface --------------------------------------------------------------------------------------------------
def deepface_available() -> str | None:
    """None when deepface and its age and gender weights are present locally, else why not (one line)."""
    if importlib.util.find_spec("deepface") is None:
        return "deepface is not installed"
    weights = Path(os.environ.get("DEEPFACE_HOME", os.path.expanduser("~"))) / ".deepface" / "weights"
    missing = [name for name in ("age", "gender") if not glob.glob(str(weights / f"{name}_model_weights.*"))]
    if missing:
        return f"deepface weights for {' and '.join(missing)} are not under {weights}"
    return None


def deepface_suggestions(path: str | Path, adult_age: float = 13.0) -> dict[str, Suggestion]:
    """Gender and age group from deepface ``analyze`` (call only when ``deepface_available()`` is None)."""
    from deepface import DeepFace

    with Image.open(path) as img:
        bgr = np.asarray(img.convert("RGB"))[:, :, ::-1].copy()
    result = DeepFace.analyze(bgr, actions=("age", "gender"), enforce_detection=False, detector_backend="skip",
                              silent=True)
    face = result[0] if isinstance(result, list) else result
    woman = float(face["gender"]["Woman"]) / 100.0
    p_adult = _sigmoid((float(face["age"]) - adult_age) / 2.0)
    return {"gender": Suggestion(int(woman >= 0.5), max(woman, 1 - woman), "deepface"),
            "age_group": Suggestion(int(p_adult >= 0.5), max(p_adult, 1 - p_adult), "deepface")}
