"""Export round trip: load_from_disk and the Parquet shards agree, survive deleting the sources, swap atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from labeling import LabelingError, LabelStore, export_dataset, load_catalog, split_items
from labeling.cli import main

NAMES = {"gender": ["male", "female"], "age_group": ["child", "adult"], "glasses": ["not_wearing", "wearing"],
         "pose": ["sideways", "front_facing"], "teeth": ["not_showing", "showing"]}


def _label(store: LabelStore) -> dict[str, dict[str, int]]:
    """Two annotators over 16 of 20 items (alice all five attributes, bob gender only: some ties)."""
    truth = {}
    for k, item in enumerate(store.items()[:16]):
        labels = {"gender": k % 2, "age_group": int(k % 5 != 0), "glasses": int(k % 4 == 0), "pose": int(k % 3 != 0),
                  "teeth": int(k % 2 == 0)}
        store.save(item, "alice", labels)
        truth[item] = labels
    for k, item in enumerate(store.items()[:6]):
        store.save(item, "bob", {"gender": 1})  # agrees on odd k, ties on even k
        if k % 2 == 0:
            truth[item] = {**truth[item], "gender": -1}
    return truth


def _rows(split) -> dict[str, dict[str, int]]:
    return {r["sample_id"]: {n: r[n] for n in NAMES} for r in split}


def test_round_trip_survives_deleting_sources(tmp_path: Path, faces: Path, store: LabelStore) -> None:
    truth = _label(store)
    out = tmp_path / "export"
    result = export_dataset(store, load_catalog(faces, progress=False), out, progress=False)
    assert result.splits == {"train": 13, "test": 3} and result.ties == 3
    images = {p.stem: p.read_bytes() for p in faces.glob("*.png")}
    shutil.rmtree(faces)

    disk = datasets.load_from_disk(str(out))
    assert isinstance(disk, datasets.DatasetDict) and set(disk) == {"train", "test"}
    parquet = datasets.load_dataset("parquet", data_files={s: str(out / "data" / f"{s}-*.parquet")
                                                           for s in ("train", "test")})
    hub_style = datasets.load_dataset(str(out))  # the card's `configs` point at the shards
    for split in ("train", "test"):
        for name, values in NAMES.items():
            assert disk[split].features[name].names == values
            assert parquet[split].features[name].names == values
        assert disk[split].features["image"] == datasets.Image()
        assert _rows(disk[split]) == _rows(parquet[split]) == _rows(hub_style[split])
    merged = {**_rows(disk["train"]), **_rows(disk["test"])}
    assert merged == truth
    row = disk["test"][0]
    assert row["image"].size == (64, 64) and row["seed"] == int(row["sample_id"][4:]) and row["network"] == "test-faces"
    raw = disk["test"].cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert raw["bytes"] == images[row["sample_id"]]  # embedded bytes, identical to the source PNG
    card = (out / "README.md").read_text()
    assert "configs:" in card and "path: data/train-*" in card and "class_label:" in card
    assert "| gender | 1 = female |" in card and "licence: CC0 test images" in card


def test_split_is_seeded_and_stratified() -> None:
    strata = {f"i{k:02d}": (k % 2,) for k in range(40)}
    a, b = split_items(strata, 0.25, seed=1), split_items(strata, 0.25, seed=1)
    assert a == b and split_items(strata, 0.25, seed=2) != a
    for value in (0, 1):
        assert sum(1 for i, s in a.items() if s == "test" and strata[i] == (value,)) == 5


def test_killed_export_leaves_previous_intact(tmp_path: Path, faces: Path, store: LabelStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _label(store)
    catalog = load_catalog(faces, progress=False)
    out = tmp_path / "export"
    export_dataset(store, catalog, out, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    store.save(store.items()[19], "alice", {"gender": 0})

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the new shards are being written

    monkeypatch.setattr(datasets.Dataset, "to_parquet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(store, catalog, out, progress=False)
    monkeypatch.undo()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export")] == []

    stale = tmp_path / ".export.tmp-999999999"  # what a SIGKILLed export leaves: cleaned by the next one
    stale.mkdir()
    export_dataset(store, catalog, out, progress=False)
    assert not stale.exists()
    assert sum(datasets.load_from_disk(str(out)).num_rows.values()) == 17


def test_ties_review_holds_items_back(tmp_path: Path, faces: Path, store: LabelStore) -> None:
    _label(store)
    out = tmp_path / "export"
    result = export_dataset(store, load_catalog(faces, progress=False), out, ties="review", progress=False)
    assert result.review == 3 and sum(result.splits.values()) == 13
    review = [json.loads(line) for line in (out / "review.jsonl").read_text().splitlines()]
    assert {r["item"] for r in review} == set(store.items()[0:6:2])


def test_cli_export_and_refusals(tmp_path: Path, faces: Path, store: LabelStore, capsys) -> None:
    _label(store)
    out = tmp_path / "cli-export"
    assert main(["export", "--db", str(store.path), "--images", str(faces / "manifest.jsonl"), "--out", str(out),
                 "--no-progress"]) == 0
    assert "train=13, test=3" in capsys.readouterr().out
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    assert main(["export", "--db", str(store.path), "--images", str(faces), "--out", str(precious),
                 "--no-progress"]) == 2
    assert "is not an earlier export" in capsys.readouterr().err and (precious / "notes.txt").exists()
    assert main(["export", "--db", str(tmp_path / "none.sqlite"), "--images", str(faces), "--out",
                 str(tmp_path / "x")]) == 2
    assert "no such database" in capsys.readouterr().err and not (tmp_path / "x").exists()
    with pytest.raises(LabelingError, match="nothing to export"):
        export_dataset(LabelStore(tmp_path / "empty.sqlite"), load_catalog(faces, progress=False), tmp_path / "e")


def test_publish_offline_is_a_clear_error(tmp_path: Path, faces: Path, store: LabelStore, capsys) -> None:
    _label(store)
    out = tmp_path / "export"
    export_dataset(store, load_catalog(faces, progress=False), out, progress=False)
    assert main(["publish", "--dataset", str(out), "--repo-id", "someone/faces"]) == 2  # HF_HUB_OFFLINE=1 here
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err
    # online mode but no network: the push itself fails and says so in one line
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_test", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    proc = subprocess.run([sys.executable, "-m", "labeling", "publish", "--dataset", str(out), "--repo-id",
                           "someone/faces"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: publish to 'someone/faces' failed:"), proc.stderr


def test_sigkilled_export_process_leaves_previous_intact(tmp_path: Path) -> None:
    """A real `python -m labeling export` killed (SIGKILL) while it writes: the old export still loads whole."""
    import signal
    import time

    from labeling.fixtures import make_faces

    faces = tmp_path / "faces"
    make_faces(faces, 150)
    store = LabelStore(tmp_path / "db.sqlite")
    store.add_items(load_catalog(faces, progress=False).ids())
    for k, item in enumerate(store.items()):
        store.save(item, "ann", {"gender": k % 2, "pose": (k // 2) % 2})
    out = tmp_path / "export"
    export_dataset(store, load_catalog(faces, progress=False), out, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    store.save(store.items()[0], "ann", {"teeth": 1})  # the next export would differ
    cmd = [sys.executable, "-m", "labeling", "export", "--db", str(store.path), "--images", str(faces), "--out",
           str(out), "--no-progress"]
    for _ in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any(tmp_path.glob(".export.tmp-*")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(60)
        if proc.returncode == -signal.SIGKILL:
            break
        export_dataset(store, load_catalog(faces, progress=False), out, progress=False)  # finished first: retry
        before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert proc.returncode == -signal.SIGKILL
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sum(datasets.load_from_disk(str(out)).num_rows.values()) == 150
