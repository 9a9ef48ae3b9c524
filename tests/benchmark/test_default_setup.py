"""The no-argument face suite runs DEFAULT_SETUP (measured for the default dataset); --dataset keeps the paper's
settings; flags override both; a second run builds and extracts nothing."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.cli import build_parser, main
from benchmark.datasets.default_faces import DEFAULT_SIZE, MIN_CONFIDENCE, default_faces_dir
from benchmark.face_parts import DIM, PARTS, part_weights
from benchmark.faces import DEFAULT_OVERRIDES, DEFAULT_SETUP, DEFAULT_TRAIN, HIDDEN, PAPER_REGIMES
from benchmark.suites.faces import SUITE

REGIMES = list(PAPER_REGIMES.values())


def _settings(argv, train=None):
    args = build_parser("faces").parse_args(["--suite", "faces", *argv])
    return SUITE.settings(args, train or DEFAULT_TRAIN.replace(device="cpu"), REGIMES)


def test_no_dataset_means_the_measured_default_setup():
    config = _settings([])
    assert config.hidden == DEFAULT_SETUP.hidden != HIDDEN
    assert config.clients == DEFAULT_SETUP.clients
    assert config.train == DEFAULT_SETUP.train.replace(device="cpu") and config.train.threads == 1
    assert config.overrides == DEFAULT_SETUP.overrides
    assert DEFAULT_SETUP.size == DEFAULT_SIZE and DEFAULT_SETUP.min_confidence == MIN_CONFIDENCE


def test_a_dataset_keeps_the_papers_settings(tmp_path):
    config = _settings(["--dataset", str(tmp_path)])
    assert config.hidden == HIDDEN == (4096, 2048, 1024) and config.clients == 100
    assert config.train == DEFAULT_TRAIN.replace(device="cpu", threads=os.cpu_count() or 1)
    assert config.overrides == DEFAULT_OVERRIDES


def test_flags_override_the_default_setup_even_when_they_equal_the_papers_value(tmp_path):
    assert DEFAULT_SETUP.train.rounds != DEFAULT_TRAIN.rounds or DEFAULT_SETUP.train.lr != DEFAULT_TRAIN.lr
    config = _settings(["--rounds", str(DEFAULT_TRAIN.rounds), "--hidden", "4096,2048,1024", "--clients", "50"],
                       DEFAULT_TRAIN.replace(device="cpu"))
    assert config.train.rounds == DEFAULT_TRAIN.rounds and config.hidden == HIDDEN and config.clients == 50
    assert config.train.lr == DEFAULT_SETUP.train.lr  # not given: the setup's
    quick = _settings(["--quick"], DEFAULT_TRAIN.replace(device="cpu", rounds=3, local_epochs=1))
    assert (quick.train.rounds, quick.train.local_epochs) == (3, 1)
    toml = tmp_path / "t.toml"
    toml.write_text(f"lr = {DEFAULT_TRAIN.lr}\nlocal_epochs = 2\n")
    from fedmtl.config import load_config

    configured = _settings(["--config", str(toml)], load_config(toml, base=DEFAULT_TRAIN).replace(device="cpu"))
    assert configured.train.lr == DEFAULT_TRAIN.lr and configured.train.local_epochs == 2  # the file's values
    assert configured.train.rounds == DEFAULT_SETUP.train.rounds and configured.overrides == {}


def test_part_weights_give_every_part_the_same_total_variance():
    w = part_weights()
    assert w.shape == (DIM,) and np.isclose((w.astype(np.float64) ** 2).sum(), DIM, rtol=1e-5)
    totals = [float((w[cols].astype(np.float64) ** 2).sum()) for cols in PARTS.values()]
    assert max(totals) == pytest.approx(min(totals), rel=1e-5)
    assert w[PARTS["cues"]][0] > w[PARTS["gender_conv"]][0] * 9  # 3 columns against 256


def test_cydral_features_are_weighted_by_part_and_others_are_not(face_export):
    from benchmark.datasets.faces import load_faces
    from benchmark.faces import FaceSuiteConfig, build_face_data
    from benchmark.features import FeatureSet

    dataset = load_faces(face_export)
    rng = np.random.default_rng(0)

    def features(model, dim):
        arrays = {s: rng.normal(3.0, 2.0, (len(dataset.splits[s].sample_ids), dim)).astype(np.float32)
                  for s in ("train", "test")}
        ids = {s: tuple(dataset.splits[s].sample_ids) for s in arrays}
        return FeatureSet(arrays, ids, {"model": model}, Path("unused"), cached=True)

    config = FaceSuiteConfig(clients=5, hidden=(8,))
    cydral = build_face_data(dataset, features("CydralDlib", DIM), config).pooled_joint.x_train
    std = cydral.std(0, unbiased=False)
    np.testing.assert_allclose(std.numpy(), part_weights(), rtol=1e-3)
    plain = build_face_data(dataset, features("Dlib", 128), config).pooled_joint.x_train
    assert torch.allclose(plain.std(0, unbiased=False), torch.ones(128), atol=1e-3)


def test_the_confidence_floor_is_part_of_the_dataset_key(tmp_path, monkeypatch):
    import benchmark.datasets.default_faces as default_faces

    with_floor = default_faces_dir(12, tmp_path)
    monkeypatch.setattr(default_faces, "MIN_CONFIDENCE", 0.0)
    assert default_faces_dir(12, tmp_path) != with_floor


def test_no_argument_suite_uses_the_setup_and_a_second_run_builds_and_extracts_nothing(tmp_path, capsys):
    """The default dataset's path through the CLI, at a tiny size (--size, --clients: 30 faces cannot feed the
    default's clients); everything else is the default setup's."""
    cache, out = tmp_path / "cache", tmp_path / "results"
    argv = ["--suite", "faces", "--size", "30", "--clients", "5", "--cache-dir", str(cache), "--seeds", "1",
            "--rounds", "1", "--regimes", "centralized_joint,mtfl", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    board = json.loads((out / "faces" / "leaderboard.json").read_text())
    assert board["meta"]["head"] == [*DEFAULT_SETUP.hidden, 1] and board["meta"]["model"] == "CydralDlib"
    assert board["meta"]["features_cached"] is False
    rows = {r["regime"]: r["config"] for r in board["rows"]}
    assert rows["mtfl"]["lr"] == DEFAULT_SETUP.train.lr
    assert rows["mtfl"]["local_epochs"] == DEFAULT_SETUP.train.local_epochs
    assert rows["centralized_joint"]["local_epochs"] == DEFAULT_SETUP.overrides["centralized_joint"]["local_epochs"]
    assert any(f"below {MIN_CONFIDENCE:g}" in n for n in board["meta"]["notes"])
    root = default_faces_dir(30, cache)
    for name in ("images", "labels.sqlite"):  # a rebuild would need them
        os.rename(root / name, tmp_path / name)
    features = sorted((cache / "face-features").glob("*.npz"))
    stamp = [p.stat().st_mtime_ns for p in features]
    capsys.readouterr()
    assert main(argv) == 0
    again = json.loads((out / "faces" / "leaderboard.json").read_text())
    assert again["meta"]["features_cached"] is True
    assert [p.stat().st_mtime_ns for p in features] == stamp
    assert sorted((cache / "face-features").glob("*.npz")) == features
    assert not (root / "images").exists() and not (root / "labels.sqlite").exists()
