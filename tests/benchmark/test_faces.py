import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.cli import main
from benchmark.datasets.faces import load_faces
from benchmark.faces import (
    DEFAULT_TRAIN,
    PAPER_REGIMES,
    FaceSuiteConfig,
    build_face_data,
    face_workload,
    get_face_regimes,
)
from benchmark.features import FeatureSet
from benchmark.runner import Task, run_task
from fedmtl import ConfigError

TASKS = ["gender", "age_group", "glasses", "pose", "teeth"]
SMALL = ["--clients", "10", "--hidden", "32,16,8", "--no-progress"]


def test_quick_run_of_the_five_regimes_gives_a_row_per_task(face_features, face_export, tmp_path, capsys):
    _, _, cache = face_features
    out = tmp_path / "results"
    code = main(["--suite", "faces", "--dataset", str(face_export), "--cache-dir", str(cache), "--quick",
                 "--out", str(out), *SMALL])
    printed = capsys.readouterr().out
    assert code == 0
    board = json.loads((out / "faces" / "leaderboard.json").read_text())
    assert board["meta"]["features_cached"] is True  # the session fixture extracted them: nothing is extracted
    assert board["meta"]["model"] == "Dlib" and board["meta"]["features"] == 128
    assert {row["regime"] for row in board["rows"]} == set(PAPER_REGIMES)
    for row in board["rows"]:
        assert list(row["per_task"]) == TASKS
        assert all(0 <= v <= 100 for v in row["per_task"].values())
        assert row["seeds"] == 1 and row["config"]["rounds"] == 3 and row["config"]["batch_size"] == 16
        assert all(len(c) == 3 for c in row["per_seed"][0]["curves"].values())
    means = [row["mean"] for row in board["rows"]]
    assert means == sorted(means, reverse=True)
    assert math.isclose(means[0], sum(board["rows"][0]["per_task"].values()) / 5)
    layers = {row["regime"]: row["config"]["layers"] for row in board["rows"]}
    assert layers["mtfl"] == ["common", "common", "task", "task"]
    assert layers["fedavg_per_task"] == ["task"] * 4 and layers["local"] == ["personal"] * 4
    csv_lines = (out / "faces" / "leaderboard.csv").read_text().splitlines()
    assert csv_lines[0].startswith("regime,task,accuracy,std") and len(csv_lines) == 1 + 5 * 6 + 6
    assert "| rank | regime | gender (%) | age_group (%)" in printed
    # the majority-class baseline per task, from the labels the rows are scored on
    majority = board["baselines"]["majority_class"]
    assert list(majority) == [*TASKS, "mean"] and all(50 <= v <= 100 for v in majority.values())
    assert board["meta"]["majority_class"] == {t: majority[t] for t in TASKS}
    assert "| - | *majority class* | " + " | ".join(f"{majority[t]:.2f}" for t in TASKS) in printed
    assert [line.split(",")[0] for line in csv_lines[-6:]] == ["majority_class"] * 6
    for name in ["curves.png", *(f"curves-{t}.png" for t in TASKS)]:
        assert (out / "faces" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _separable(dataset, dim=12, seed=0):
    """Features in which each attribute is a direction (plus noise): a correct trainer must learn them."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(len(dataset.tasks), dim))
    feats = {}
    for split, data in dataset.splits.items():
        signs = np.where(data.labels == 1, 1.0, np.where(data.labels == 0, -1.0, rng.choice([-1.0, 1.0],
                                                                                          data.labels.shape)))
        feats[split] = (signs @ directions + 0.3 * rng.normal(size=(len(signs), dim))).astype(np.float32)
    return FeatureSet(feats, {s: d.sample_ids for s, d in dataset.splits.items()}, {}, Path("x"), cached=True)


def test_clients_hold_only_their_groups_label_and_data_is_dealt_uniformly(face_export):
    dataset = load_faces(face_export)
    data = build_face_data(dataset, _separable(dataset), FaceSuiteConfig(clients=10, hidden=(8,)))
    assert [c.task for c in data.clients] == TASKS * 2
    assert data.sizes == (12, 8, 1)
    train = dataset.splits["train"]
    shares = [c.num_train for c in data.clients]
    for k, task in enumerate(TASKS):
        for c, joint in zip(data.clients, data.joint_clients, strict=True):
            if c.task != task:
                continue
            assert c.y_train.shape[1] == 1 and torch.isfinite(c.y_train).all()
            assert joint.y_test.shape[1] == 5
            own = torch.isfinite(joint.y_test)
            assert own[:, k].all() and not own[:, [i for i in range(5) if i != k]].any()
        assert data.pooled_task[task].num_train == int((train.labels[:, k] >= 0).sum())
    assert data.pooled_joint.num_train == len(train.sample_ids)
    labelled = (train.labels >= 0).mean()
    assert max(shares) - min(shares) <= 6 and sum(shares) <= len(train.sample_ids) * labelled * 1.5


def test_mtfl_and_centralised_cases_learn_separable_attributes(face_export):
    dataset = load_faces(face_export)
    train = DEFAULT_TRAIN.replace(rounds=40, lr=0.3, local_epochs=3, threads=1)
    data = build_face_data(dataset, _separable(dataset), FaceSuiteConfig(clients=10, hidden=(32, 16, 8),
                                                                        train=train))
    for name in ("mtfl", "fedavg_per_task", "centralized_joint", "centralized_separate"):
        run = run_task(face_workload(data), Task(PAPER_REGIMES[name], 0))
        assert list(run.final) == [*TASKS, "mean"] and run.rounds == list(range(1, 41))
        assert run.final["mean"] > 80, (name, run.final)  # chance: ~50


def test_face_regimes_are_the_papers_five_plus_named_baselines():
    assert [r.name for r in get_face_regimes("all")] == list(PAPER_REGIMES)
    assert [r.name for r in get_face_regimes("mtfl,fedper")] == ["mtfl", "fedper"]
    with pytest.raises(ConfigError, match="regime 'fedavg' is unknown to the faces suite"):
        get_face_regimes("fedavg")


@pytest.mark.parametrize("args, message", [
    (["--dataset", "/nonexistent/export"], "no such folder"),
    (["--dataset", "someone/faces-not-cached"], "cannot load it"),  # a Hub id, offline
    (["--dataset", "DATASET", "--regimes", "mtfl,fedmagic"], "regime 'fedmagic' is unknown"),
    (["--dataset", "DATASET", "--tasks", "gender,smile"], "task 'smile' is not an attribute"),
    (["--dataset", "DATASET", "--clients", "400"], "gets no labelled training image"),
    (["--dataset", "DATASET", "--split", "random"], "--split is a flag of the har suite, not of faces"),
    (["--dataset", "DATASET", "--engine", "flower"], "--engine is a flag of the har suite"),
    (["--dataset", "DATASET", "--size", "50"], "--size sets the size of the default dataset"),
    (["--dataset", "DATASET", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--dataset", "DATASET", "--memory-budget", "lots"], "'lots' is not a size like 4G"),
    (["--dataset", "DATASET", "--model", "VGG-Fcae"], "face model 'VGG-Fcae' is unknown"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(face_features, face_export, tmp_path, capsys, args,
                                                          message):
    _, _, cache = face_features
    out = tmp_path / "results"
    args = [str(face_export) if a == "DATASET" else a for a in args]
    code = main(["--suite", "faces", "--quick", "--out", str(out), "--cache-dir", str(cache), *SMALL, *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_a_folder_that_is_not_an_export_is_refused(tmp_path, capsys):
    import datasets

    folder = tmp_path / "only-train"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"sample_id": ["a"]})}).save_to_disk(str(folder))
    capsys.readouterr()
    code = main(["--suite", "faces", "--quick", "--dataset", str(folder), "--out", str(tmp_path / "r"), *SMALL])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "split 'test' is missing" in err and "\n" not in err


def test_grid_tunes_lr_for_all_and_epochs_and_active_clients_for_federated_regimes(face_features, face_export,
                                                                                    tmp_path, capsys):
    _, _, cache = face_features
    out = tmp_path / "results"
    code = main(["--suite", "faces", "--dataset", str(face_export), "--cache-dir", str(cache), "--quick", "--grid",
                 "--regimes", "local,mtfl", "--grid-lrs", "0.01,0.3", "--grid-epochs", "1,2", "--grid-active",
                 "1,all", "--grid-seeds", "1", "--out", str(out), *SMALL])
    capsys.readouterr()
    assert code == 0
    grid = json.loads((out / "faces" / "grid.json").read_text())
    assert len(grid["local"]["grid"]) == 2 and len(grid["mtfl"]["grid"]) == 2 * 2 * 2
    assert {p["clients_per_task"] for p in grid["mtfl"]["grid"]} == {1, "all"}
    for entry in grid.values():
        best = max(entry["grid"], key=lambda p: p["val_accuracy"])
        assert entry["val_accuracy"] == best["val_accuracy"]
    board = {row["regime"]: row for row in json.loads((out / "faces" / "leaderboard.json").read_text())["rows"]}
    for name in ("local", "mtfl"):
        for key in ("lr", "local_epochs", "clients_per_task"):
            assert board[name]["config"][key] == grid[name]["best"][key]


def test_pooled_cases_default_to_one_epoch_and_a_config_file_replaces_the_defaults(face_features, face_export,
                                                                                    tmp_path):
    from benchmark.faces import DEFAULT_OVERRIDES

    _, _, cache = face_features

    dataset = load_faces(face_export)
    data = build_face_data(dataset, _separable(dataset), FaceSuiteConfig(clients=10, hidden=(8,)))
    workload = face_workload(data)
    assert workload.config_for(PAPER_REGIMES["centralized_joint"], 0).local_epochs == 1
    assert workload.config_for(PAPER_REGIMES["mtfl"], 1).local_epochs == DEFAULT_TRAIN.local_epochs == 5
    assert workload.config_for(PAPER_REGIMES["mtfl"], 1).seed == 1 and DEFAULT_TRAIN.batch_size == 16
    toml = tmp_path / "face.toml"
    toml.write_text('rounds = 2\nlocal_epochs = 2\nlr = 0.02\nloss = "bce"\nbackend = "fused"\nbatch_size = 16\n')
    out = tmp_path / "results"
    assert main(["--suite", "faces", "--dataset", str(face_export), "--config", str(toml), "--seeds", "1",
                 "--cache-dir", str(cache), "--regimes", "centralized_joint,mtfl", "--out", str(out), *SMALL]) == 0
    rows = {r["regime"]: r["config"] for r in json.loads((out / "faces" / "leaderboard.json").read_text())["rows"]}
    assert rows["centralized_joint"]["local_epochs"] == rows["mtfl"]["local_epochs"] == 2
    assert rows["mtfl"]["rounds"] == 2 and rows["mtfl"]["lr"] == 0.02 and DEFAULT_OVERRIDES
