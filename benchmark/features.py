"""Pre-trained layers through ``deepface``: face images -> fixed feature vectors, computed once and cached.

The paper freezes VGG-Face up to FC7 (4096-d) and trains only the layers above it, so the frozen part can run
once per image instead of once per step. ``deepface`` (PyTorch backend, no TensorFlow) provides the models;
``VGG-Face`` gives its L2-normalised relu(fc7). Weights are read from ``$DEEPFACE_HOME/.deepface/weights/``:
deepface downloads them where there is internet. The offline default is deepface's ``Dlib`` model (128-d
ResNet), whose weight files ship in the PyPI package ``face-recognition-models``; they are linked into a
project-managed ``DEEPFACE_HOME`` (``<cache>/deepface``) unless the user set one.

One model is not deepface's: ``CydralDlib`` (``benchmark.face_parts``), the Cydral age and gender networks'
inner layers, dlib's landmark geometry and its aligned 128-d descriptor, all offline. A linear probe on
hand-labelled generated faces chose it over deepface's Dlib for the default dataset (README, "Pre-trained layers
by measurement"), whose suite uses it unless ``--model`` says otherwise.

Features are cached per (dataset images, model, detector options) in ``<cache>/face-features/<key>.npz``,
written atomically once every image is done: a run that fails (missing weights, a bad image) leaves nothing.
Labels are not part of the key: relabelling does not change what the frozen layers compute.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from benchmark.datasets.faces import FaceDataset
from benchmark.face_parts import MODEL as FACE_PARTS_MODEL
from fedmtl.errors import ConfigError, DatasetError, FedMTLError
from fedmtl.files import atomic_write

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_DETECTOR", "MODEL_WEIGHTS", "DETECTOR_WEIGHTS", "ExtractorConfig", "FeatureSet",
    "MissingWeightsError", "deepface_home", "cache_key", "extract_features", "load_or_extract",
]

DEFAULT_MODEL = "Dlib"  # for a dataset given with --dataset; the default dataset uses FACE_PARTS_MODEL
# Generated faces are already aligned crops: 'skip' feeds the whole image to the model (no detector weights).
DEFAULT_DETECTOR = "skip"
FEATURE_VERSION = 1  # bump when what is stored for the same key changes

# Weight files deepface's PyTorch backend reads for each model / detector (under DEEPFACE_HOME/.deepface/weights).
MODEL_WEIGHTS: dict[str, tuple[str, ...]] = {
    "VGG-Face": ("vgg_face_weights.pth",),
    "Facenet": ("facenet_weights.pth",),
    "Facenet512": ("facenet512_weights.pth",),
    "OpenFace": ("openface_weights.pth",),
    "DeepFace": ("VGGFace2_DeepFace_weights_val-0.9034.pth",),
    "DeepID": ("deepid_weights.pth",),
    "ArcFace": ("arcface_weights.pth",),
    "GhostFaceNet": ("ghostfacenet_v1.pth",),
    "Dlib": ("dlib_face_recognition_resnet_model_v1.dat",),
    FACE_PARTS_MODEL: (),  # reads its model files itself (benchmark.face_parts), not through deepface
}
DETECTOR_WEIGHTS: dict[str, tuple[str, ...]] = {
    "skip": (),
    "opencv": (),  # Haar cascades ship inside opencv-*-headless < 5
    "dlib": ("shape_predictor_5_face_landmarks.dat",),
}
# Files that PyPI's face-recognition-models ships, so they need no download.
_SHIPPED = ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat")


class MissingWeightsError(FedMTLError):
    """A pre-trained model's weight file is not where deepface looks for it (and cannot be downloaded here)."""


@dataclass(frozen=True)
class ExtractorConfig:
    """Everything that decides the features of an image besides the image itself."""

    model: str = DEFAULT_MODEL
    detector: str = DEFAULT_DETECTOR
    enforce_detection: bool = False  # synthetic faces: a missed detection falls back to the whole image
    align: bool = True
    batch_size: int = 32

    def key_fields(self) -> dict[str, Any]:
        fields = asdict(self)
        fields.pop("batch_size")  # changes speed, not results
        return fields


@dataclass(frozen=True)
class FeatureSet:
    """Features per split, row-aligned with the dataset's rows; ``cached`` says whether nothing was extracted."""

    features: dict[str, np.ndarray]
    sample_ids: dict[str, tuple[str, ...]]
    meta: dict[str, Any]
    path: Path
    cached: bool

    @property
    def dim(self) -> int:
        return int(next(iter(self.features.values())).shape[1])


def _default_cache() -> Path:
    from benchmark.datasets.har import default_cache_dir

    return default_cache_dir()


def deepface_home(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``$DEEPFACE_HOME`` if the user set it, else ``<cache>/deepface``; the files that ship in PyPI's
    face-recognition-models are linked (or copied) into its weights folder so Dlib works offline."""
    env = os.environ.get("DEEPFACE_HOME")
    home = Path(env).expanduser() if env else Path(cache_dir or _default_cache()) / "deepface"
    weights = home / ".deepface" / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.find_spec("face_recognition_models")  # importing it needs pkg_resources
    if spec is not None and spec.submodule_search_locations:
        shipped = Path(next(iter(spec.submodule_search_locations))) / "models"
        for name in _SHIPPED:
            target, source = weights / name, shipped / name
            if target.exists() or not source.is_file():
                continue
            tmp = weights / f".{name}.tmp-{os.getpid()}"
            try:
                os.symlink(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
    return home


def _check_weights(config: ExtractorConfig, home: Path) -> None:
    if config.model not in MODEL_WEIGHTS:
        raise ConfigError(f"face model {config.model!r} is unknown (known: {', '.join(MODEL_WEIGHTS)})")
    if config.model == FACE_PARTS_MODEL:
        from benchmark.face_parts import check_model_files

        check_model_files()
        return
    weights = home / ".deepface" / "weights"
    for name in MODEL_WEIGHTS[config.model] + DETECTOR_WEIGHTS.get(config.detector, ()):
        if not (weights / name).is_file():
            raise MissingWeightsError(
                f"{config.model} needs the weight file {name}: put it at {weights / name} (deepface downloads it "
                "there when online; or set DEEPFACE_HOME to a folder whose .deepface/weights/ holds it)")


def cache_key(dataset_fingerprint: str, config: ExtractorConfig) -> str:
    payload = {"dataset": dataset_fingerprint, "version": FEATURE_VERSION, **config.key_fields()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@contextlib.contextmanager
def _deepface_env(home: Path) -> Iterator[None]:
    """deepface reads DEEPFACE_HOME when it needs a file; pin its backend to PyTorch (never TensorFlow)."""
    saved = {k: os.environ.get(k) for k in ("DEEPFACE_HOME", "DEEPFACE_BACKEND_ENGINE", "TF_CPP_MIN_LOG_LEVEL")}
    os.environ.update(DEEPFACE_HOME=str(home), DEEPFACE_BACKEND_ENGINE="pytorch", TF_CPP_MIN_LOG_LEVEL="3")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _torch_device(device: str) -> Iterator[None]:
    """deepface's PyTorch models move themselves to CUDA whenever it exists; ``cpu`` keeps them on the CPU by
    hiding CUDA from them while they are built and run, ``cuda`` requires it."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available to torch")
    if device != "cpu" or not torch.cuda.is_available():
        yield
        return
    original = torch.cuda.is_available
    torch.cuda.is_available = lambda: False  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.cuda.is_available = original  # type: ignore[assignment]


def _decode_bgr(data: bytes, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{what}: not a readable image ({exc})") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def extract_features(images: Sequence[bytes], config: ExtractorConfig, *, home: Path, names: Sequence[str] = (),
                     progress: bool = True, desc: str = "features", device: str = "cpu") -> tuple[np.ndarray, int]:
    """Run ``DeepFace.represent`` over encoded images in batches; returns (features [N, d], faces detected).

    An image where the detector finds no face is represented from the whole image (``enforce_detection``
    False) and not counted as detected.
    """
    _check_weights(config, home)
    if config.model == FACE_PARTS_MODEL:  # its own detector and alignment; the deepface options do not apply
        from benchmark.face_parts import extract

        return extract(images, names=names, progress=progress, desc=desc)
    with _deepface_env(home), _torch_device(device):
        from deepface import DeepFace

        rows: list[np.ndarray] = []
        detected = 0
        bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress)
        for start in range(0, len(images), config.batch_size):
            batch = [_decode_bgr(data, names[start + i] if names else f"image {start + i}")
                     for i, data in enumerate(images[start:start + config.batch_size])]
            try:
                out = DeepFace.represent(batch, model_name=config.model, detector_backend=config.detector,
                                         enforce_detection=config.enforce_detection, align=config.align,
                                         max_faces=1)
            except ValueError as exc:
                text = str(exc)
                if "Consider downloading it manually to" in text:
                    target = text.split("Consider downloading it manually to", 1)[1].strip().rstrip(".")
                    raise MissingWeightsError(f"{config.model}/{config.detector} needs a weight file that cannot "
                                              f"be downloaded here: put it at {target}") from None
                raise DatasetError(f"feature extraction ({config.model}, detector {config.detector}) failed on "
                                   f"images {start}..{start + len(batch) - 1}: {text.splitlines()[0]}") from None
            if out and isinstance(out[0], dict):  # a batch of one comes back unnested
                out = [out]
            for faces in out:
                face = faces[0] if isinstance(faces, list) else faces
                rows.append(np.asarray(face["embedding"], dtype=np.float32))
                detected += int(config.detector != "skip" and float(face.get("face_confidence") or 0) > 0)
            bar.update(len(batch))
        bar.close()
    if not rows:
        raise DatasetError("feature extraction: the dataset has no images")
    return np.stack(rows), detected


def _load(path: Path, key: str) -> FeatureSet | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("key") != key:
                return None
            features = {s: data[f"features_{s}"] for s in meta["splits"]}
            ids = {s: tuple(str(v) for v in data[f"ids_{s}"]) for s in meta["splits"]}
    except (OSError, KeyError, ValueError):
        return None  # unreadable or foreign: extract again and replace it
    return FeatureSet(features, ids, meta, path, cached=True)


def load_or_extract(dataset: FaceDataset, config: ExtractorConfig | None = None, *,
                    cache_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                    device: str = "cpu") -> FeatureSet:
    """The dataset's features for ``config``: from the cache when its key matches, else extracted and cached.

    ``device`` (``cpu`` or ``cuda``) is where deepface's PyTorch models run; it is not part of the cache key
    (the same frozen layers compute the same features up to float rounding).
    """
    config = config or ExtractorConfig()
    cache = Path(cache_dir) if cache_dir is not None else _default_cache()
    key = cache_key(dataset.fingerprint, config)
    path = cache / "face-features" / f"{key}.npz"
    if path.exists():
        found = _load(path, key)
        if found is not None:
            return found
    home = deepface_home(cache)
    features: dict[str, np.ndarray] = {}
    detected: dict[str, int] = {}
    for name, split in dataset.splits.items():
        features[name], detected[name] = extract_features(
            split.images, config, home=home, names=[f"{dataset.source} {name} {i}" for i in split.sample_ids],
            progress=progress, desc=f"{config.model} features ({name})", device=device)
    import deepface

    meta = {"key": key, "dataset": dataset.fingerprint, "source": dataset.source, "splits": list(features),
            "dim": int(next(iter(features.values())).shape[1]), "faces_detected": detected,
            "deepface": getattr(deepface, "__version__", "?"), **config.key_fields()}
    arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta))}
    for name in features:
        arrays[f"features_{name}"] = features[name]
        arrays[f"ids_{name}"] = np.array(dataset.splits[name].sample_ids, dtype=str)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())
    ids = {name: tuple(dataset.splits[name].sample_ids) for name in features}
    return FeatureSet(features, ids, meta, path, cached=False)
