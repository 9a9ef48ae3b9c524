import dataclasses

import numpy as np
import pytest
from conftest import make_face_export

from benchmark.cli import main
from benchmark.datasets.faces import FaceSplit, load_faces
from benchmark.features import ExtractorConfig, MissingWeightsError, cache_key, deepface_home, load_or_extract
from fedmtl import DatasetError


def _cached_files(cache):
    folder = cache / "face-features"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def tiny(tmp_path):
    return load_faces(make_face_export(tmp_path / "tiny", n_train=5, n_test=3, seed=7))


def test_dlib_features_are_real_embeddings_and_cached_once(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPFACE_HOME", raising=False)
    cache = tmp_path / "cache"
    first = load_or_extract(tiny, cache_dir=cache, progress=False)
    assert not first.cached and first.dim == 128
    assert first.features["train"].shape == (5, 128) and first.features["test"].shape == (3, 128)
    assert first.sample_ids["train"] == tiny.splits["train"].sample_ids
    assert np.isfinite(first.features["train"]).all()
    assert np.linalg.matrix_rank(first.features["train"]) == 5  # distinct images, distinct embeddings
    weights = cache / "deepface" / ".deepface" / "weights"
    assert (weights / "dlib_face_recognition_resnet_model_v1.dat").stat().st_size > 20_000_000
    mtime = first.path.stat().st_mtime_ns
    second = load_or_extract(tiny, cache_dir=cache, progress=False)
    assert second.cached and second.path == first.path and first.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.features["test"], first.features["test"])


def test_cache_is_invalidated_by_dataset_model_and_detector_and_only_by_them(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPFACE_HOME", raising=False)
    cache = tmp_path / "cache"
    base = load_or_extract(tiny, cache_dir=cache, progress=False)
    # Only then: relabelling, another batch size or a reload of the same export reuse the features.
    relabelled = dataclasses.replace(tiny, splits={s: FaceSplit(d.sample_ids, d.images, np.zeros_like(d.labels))
                                                   for s, d in tiny.splits.items()})
    assert relabelled.fingerprint == tiny.fingerprint
    assert load_or_extract(relabelled, cache_dir=cache, progress=False).cached
    assert load_or_extract(tiny, ExtractorConfig(batch_size=2), cache_dir=cache, progress=False).cached
    assert load_or_extract(load_faces(tiny.source), cache_dir=cache, progress=False).cached
    # The dataset: one changed image makes a new key and a fresh extraction (an identical re-export does not).
    assert load_faces(make_face_export(tmp_path / "again", n_train=5, n_test=3, seed=7)).fingerprint == \
        tiny.fingerprint
    other = load_faces(make_face_export(tmp_path / "other", n_train=1, n_test=1, seed=99))
    changed_bytes = other.splits["train"].images[0]
    changed_export = tmp_path / "changed"
    _resave(tiny, changed_export, replace_first_train_image=changed_bytes)
    reloaded = load_faces(changed_export)
    assert reloaded.fingerprint != tiny.fingerprint
    fresh = load_or_extract(reloaded, cache_dir=cache, progress=False)
    assert not fresh.cached and fresh.path != base.path
    assert not np.allclose(fresh.features["train"][0], base.features["train"][0])
    np.testing.assert_allclose(fresh.features["train"][1:], base.features["train"][1:], atol=1e-5)
    # The detector (and its options): a new key.
    detector = load_or_extract(tiny, ExtractorConfig(detector="opencv"), cache_dir=cache, progress=False)
    assert not detector.cached and detector.meta["detector"] == "opencv"
    assert load_or_extract(tiny, ExtractorConfig(detector="opencv"), cache_dir=cache, progress=False).cached
    assert cache_key(tiny.fingerprint, ExtractorConfig(align=False)) != cache_key(tiny.fingerprint, ExtractorConfig())
    # The model: VGG-Face does not reuse Dlib's features (here its weights are absent, so it stops instead).
    assert cache_key(tiny.fingerprint, ExtractorConfig(model="VGG-Face")) != cache_key(tiny.fingerprint,
                                                                                     ExtractorConfig())
    with pytest.raises(MissingWeightsError):
        load_or_extract(tiny, ExtractorConfig(model="VGG-Face"), cache_dir=cache, progress=False)
    assert len(_cached_files(cache)) == 3


def _resave(dataset, out, replace_first_train_image):
    import datasets

    dd = datasets.load_from_disk(dataset.source)
    train = dd["train"].to_dict()
    train["image"][0] = {"bytes": replace_first_train_image, "path": None}
    dd["train"] = datasets.Dataset.from_dict(train, features=dd["train"].features)
    dd.save_to_disk(str(out))


def test_missing_vgg_face_weights_is_one_line_naming_the_file_and_nothing_is_cached(tmp_path, capsys, monkeypatch):
    export = make_face_export(tmp_path / "export", n_train=4, n_test=2, seed=3)
    home = tmp_path / "empty-home"
    monkeypatch.setenv("DEEPFACE_HOME", str(home))
    cache, out = tmp_path / "cache", tmp_path / "results"
    capsys.readouterr()
    code = main(["--suite", "faces", "--dataset", str(export), "--model", "VGG-Face", "--cache-dir", str(cache),
                 "--quick", "--no-progress", "--clients", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    want = home / ".deepface" / "weights" / "vgg_face_weights.pth"
    assert err == (f"error: VGG-Face needs the weight file vgg_face_weights.pth: put it at {want} (deepface downloads "
                   "it there when online; or set DEEPFACE_HOME to a folder whose .deepface/weights/ holds it)")
    assert _cached_files(cache) == [] and not out.exists()
    # a user-set DEEPFACE_HOME gets the shipped Dlib files too
    assert (deepface_home(cache) / ".deepface" / "weights" / "shape_predictor_5_face_landmarks.dat").is_file()


def test_an_unreadable_image_stops_extraction_and_caches_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPFACE_HOME", raising=False)
    test = tiny.splits["test"]
    broken = dataclasses.replace(tiny, fingerprint="broken", splits={
        **tiny.splits, "test": FaceSplit(test.sample_ids, (*test.images[:-1], b"not a png"), test.labels)})
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=f"{test.sample_ids[-1]}: not a readable image"):
        load_or_extract(broken, cache_dir=cache, progress=False)
    assert _cached_files(cache) == []
