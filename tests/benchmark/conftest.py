"""Tiny real face datasets in the ``labeling export`` format, drawn with numpy so every attribute is visible."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

ATTRIBUTES = {
    "gender": ["male", "female"],
    "age_group": ["child", "adult"],
    "glasses": ["not_wearing", "wearing"],
    "pose": ["sideways", "front_facing"],
    "teeth": ["not_showing", "showing"],
}


def draw_face(labels: dict[str, int], rng: np.random.Generator, size: int = 64) -> bytes:
    """A cartoon face: long hair = female, big face = adult, dark band = glasses, centred with two eyes =
    front facing, white mouth = teeth showing; colours and positions jitter."""
    from PIL import Image

    img = np.full((size, size, 3), rng.integers(90, 200, 3), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cx = size / 2 + (0 if labels["pose"] else rng.choice([-1, 1]) * size * 0.12) + rng.normal(0, 1.5)
    cy = size / 2 + rng.normal(0, 1.5)
    r = size * (0.36 if labels["age_group"] else 0.26) * rng.uniform(0.93, 1.07)
    hair = rng.integers(10, 80, 3)
    if labels["gender"]:
        img[(np.abs(xx - cx) < r * 1.25) & (yy > cy - r * 1.1) & (yy < cy + r * 1.3)] = hair
    face = ((xx - cx) / (r * 0.85)) ** 2 + ((yy - cy) / r) ** 2 < 1
    img[face] = rng.integers(170, 240, 3) * np.array([1.0, 0.8, 0.65])
    img[face & (yy < cy - r * 0.6)] = hair
    eye_y = cy - r * 0.15
    eyes = [cx - r * 0.35, cx + r * 0.35] if labels["pose"] else [cx + np.sign(cx - size / 2) * r * 0.3]
    for ex in eyes:
        img[(np.abs(xx - ex) < r * 0.12) & (np.abs(yy - eye_y) < r * 0.08)] = (20, 20, 20)
    if labels["glasses"]:
        img[(np.abs(yy - eye_y) < r * 0.2) & (np.abs(xx - cx) < r * 0.75) & ~(np.abs(yy - eye_y) < r * 0.1)] = 0
    mouth = (np.abs(xx - cx) < r * 0.35) & (np.abs(yy - (cy + r * 0.5)) < r * (0.12 if labels["teeth"] else 0.05))
    img[mouth] = (250, 250, 250) if labels["teeth"] else (150, 40, 40)
    img += rng.normal(0, 6, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_face_export(out: Path, n_train: int = 100, n_test: int = 40, seed: int = 0, unlabelled: float = 0.1,
                     size: int = 64) -> Path:
    """A ``DatasetDict`` folder with the export contract's columns (``save_to_disk``)."""
    import datasets

    rng = np.random.default_rng(seed)
    features = datasets.Features({
        "image": datasets.Image(), "sample_id": datasets.Value("string"), "seed": datasets.Value("int64"),
        "network": datasets.Value("string"),
        **{name: datasets.ClassLabel(names=names) for name, names in ATTRIBUTES.items()},
    })
    splits, k = {}, 0
    for split, n in (("train", n_train), ("test", n_test)):
        cols: dict[str, list] = {name: [] for name in features}
        for _ in range(n):
            labels = {name: int(rng.integers(0, 2)) for name in ATTRIBUTES}
            cols["image"].append({"bytes": draw_face(labels, rng, size), "path": None})
            cols["sample_id"].append(f"seed{seed * 100000 + k:07d}")
            cols["seed"].append(seed * 100000 + k)
            cols["network"].append("numpy-cartoon")
            for name, value in labels.items():
                cols[name].append(-1 if rng.random() < unlabelled else value)
            k += 1
        splits[split] = datasets.Dataset.from_dict(cols, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return out


@pytest.fixture(scope="session")
def face_export(tmp_path_factory) -> Path:
    return make_face_export(tmp_path_factory.mktemp("faces") / "export")


@pytest.fixture(scope="session")
def face_features(face_export, tmp_path_factory):
    """The tiny export's Dlib features (offline default), extracted once per session into its own cache."""
    from benchmark.datasets.faces import load_faces
    from benchmark.features import load_or_extract

    cache = tmp_path_factory.mktemp("cache")
    dataset = load_faces(face_export)
    return dataset, load_or_extract(dataset, cache_dir=cache, progress=False), cache
