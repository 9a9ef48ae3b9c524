"""Suggestions: the active learner's accuracy and ordering, the deepface guard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets

from labeling import LabelStore, export_dataset, load_catalog
from labeling.app import LabelingApp
from labeling.attributes import DEFAULT_ATTRIBUTES
from labeling.autolabel import source_names
from labeling.fixtures import make_faces
from labeling.provenance import is_model
from labeling.suggest import deepface_available


def test_active_learner_predicts_and_orders_least_certain_first(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path / "no-weights"))
    records = make_faces(tmp_path / "faces", 40)
    app = LabelingApp(LabelStore(tmp_path / "db.sqlite"), load_catalog(tmp_path / "faces", progress=False),
                      progress=False)
    assert any("deepface suggestions (gender, age) off" in n for n in app.notices)
    assert app.order() == app.ids  # nothing to learn from yet
    for record in records[:16]:
        app.store.save(record["sample_id"], "ann", {"teeth": record["truth"]["teeth"]})
    app.order()  # starts the refit in the background
    app.wait_for_refit()
    rest = [r["sample_id"] for r in records[16:]]
    predicted = app.learner.predict(rest)
    hits = sum(predicted[r["sample_id"]]["teeth"].value == r["truth"]["teeth"] for r in records[16:])
    assert hits >= 20  # of 24: white vs dark mouths are easy
    order = app.order()
    assert sorted(order) == sorted(app.ids) and order != app.ids
    confidence = [app.learner.predict([i])[i]["teeth"].confidence for i in order]
    assert confidence == sorted(confidence)
    shown = app.suggestions(rest[0])  # the most confident source wins; machine answers are stored as models'
    assert set(shown) == set(app.attributes.names) and all(0.5 <= s.confidence <= 1.0 for s in shown.values())
    stored = {(lab.annotator, lab.attribute) for lab in app.store.item_labels(rest[0]) if is_model(lab.annotator)}
    assert stored == {(source, name) for name, source in source_names().items()}


def test_deepface_guard(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    reason = deepface_available()
    assert reason is not None and "\n" not in reason


def test_generation_to_export_end_to_end(tmp_path: Path) -> None:
    """Faces from `python -m generation` (the offline DCGAN), labelled through the store, exported and reloaded."""
    gen = tmp_path / "gen"
    proc = subprocess.run([sys.executable, "-m", "generation", "generate", "--out", str(gen), "-n", "6",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = [json.loads(line) for line in (gen / "manifest.jsonl").read_text().splitlines()]
    catalog = load_catalog(gen / "manifest.jsonl", progress=False)
    assert catalog.ids() == [m["sample_id"] for m in manifest] and not catalog.skipped
    store = LabelStore(tmp_path / "db.sqlite")
    store.add_items(catalog.ids())
    for k, item in enumerate(catalog.ids()):
        store.save(item, "ann", {"gender": k % 2, "age_group": 1, "glasses": 0, "pose": 1, "teeth": k % 2})
    export_dataset(store, catalog, tmp_path / "out", test_fraction=0.34, progress=False)
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    rows = {r["sample_id"]: r for split in loaded.values() for r in split}
    assert set(rows) == set(catalog.ids())
    for m in manifest:
        assert rows[m["sample_id"]]["seed"] == m["seed"] and rows[m["sample_id"]]["network"] == m["network"]
        assert rows[m["sample_id"]]["image"].size == (m["resolution"], m["resolution"])
    assert f"network(s): {manifest[0]['network']}" in (tmp_path / "out" / "README.md").read_text()


def test_suggest_command_precomputes_into_the_database(tmp_path: Path, faces: Path, capsys) -> None:
    from labeling.cli import main

    db = tmp_path / "db.sqlite"
    assert main(["suggest", "--images", str(faces), "--db", str(db), "--no-progress"]) == 0
    rows = [lab for lab in LabelStore(db).labels() if is_model(lab.annotator)]  # machine labels, all five
    assert {(r.item_id, r.attribute) for r in rows} == {(f"seed{k:07d}", a) for k in range(20)
                                                        for a in DEFAULT_ATTRIBUTES.names}
    assert all(r.annotator == source_names()[r.attribute] and 0.5 <= r.confidence <= 1 for r in rows)
    assert "suggestions for 20 images" in capsys.readouterr().out
