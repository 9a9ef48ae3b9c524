"""64 corrupt, odd and hostile image files (``labeling.fixtures.make_odd_images``) through every tool that reads
an image folder: ``labeling serve``, ``suggest``, ``export`` and ``generation info``. Each file is used, or
skipped with its name and a one-line reason, or refused with one ``error:`` line; nothing hangs or crashes, and
the server keeps serving."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from labeling import LabelStore, load_catalog
from labeling.client import api_session
from labeling.fixtures import make_odd_images

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
MUST_SKIP = ["bad_crc.png", "bomb_12000x12000.png", "claims_100000x100000.png", "claims_65000x65000.jpg",
             "cut_half.png", "cut_half.jpg", "cut_half.webp", "empty.png", "empty.jpg", "folder.png", "loop.png",
             "loop_a.png", "dangling.png", "pipe.png", "text_as.png", "svg_as.png", "gif_as.png", "text_bomb.png"]
MUST_USE = ["good0", "good1", "good2", "one_by_one", "cmyk", "grey16", "rgb16", "palette_alpha", "grey_alpha",
            "rgba", "progressive", "exif_rotated", "animated", "UPPER", "one_by_4000"]


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("odd") / "images"
    return folder, make_odd_images(folder)


def test_the_corpus_is_odd_enough(odd) -> None:
    folder, made = odd
    assert len(made) >= 50
    assert {p.name for p in folder.iterdir()} == set(made)


def test_catalog_uses_or_names_every_file(odd) -> None:
    folder, made = odd
    catalog = load_catalog(folder, progress=False)
    used = {catalog.items[i].path.name for i in catalog.items}
    skipped = dict(catalog.skipped)
    assert used.isdisjoint(skipped) and used | set(skipped) == set(made), set(made) - used - set(skipped)
    assert not [n for n in MUST_SKIP if n not in skipped], skipped
    assert not [i for i in MUST_USE if i not in catalog.items], sorted(catalog.items)
    for name, reason in skipped.items():
        assert reason and "\n" not in reason and len(reason) < 300, (name, reason)


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _no_traceback(err: str) -> None:
    """Only one-line messages on stderr: no traceback, no Python warning (each shows its source line)."""
    assert "Traceback" not in err, err[-3000:]
    assert not re.search(r"^\S+\.py:\d+: \w*Warning", err, re.MULTILINE), err[-3000:]


def test_serve_skips_by_name_and_keeps_serving(odd, tmp_path: Path) -> None:
    folder, made = odd
    db = tmp_path / "labels.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "labeling", "serve", "--db", str(db), "--images", str(folder),
                             "--port", "0", "--no-progress", "--annotator", "odd"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        line = proc.stdout.readline()
        assert " images at http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with api_session(url, timeout=60) as http:
            listed = http.get("/labeling/api/items").json()
            for item in listed["items"]:
                r = http.get(f"/labeling/api/image/{item}")
                assert r.status_code == 200 and r.content[:2] in (b"\x89P", b"\xff\xd8", b"RI"), item
            for name in ("empty", "loop", "pipe", "folder", "dangling", "text_as", "bomb_12000x12000"):
                assert http.get(f"/labeling/api/image/{name}").status_code in (400, 404)
            assert http.get("/").status_code == 200
            for _ in listed["items"]:  # label everything through the API: every face is served, none fails
                nxt = http.get("/labeling/api/next").json()
                assert nxt["item_id"] is not None
                r = http.post("/labeling/api/save", json={"item_id": nxt["item_id"], "labels": {
                    "gender": 0, "age_group": 1, "glasses": 0, "pose": 1, "teeth": 0}})
                assert r.status_code == 200, r.text
            assert http.get("/labeling/api/next").json()["item_id"] is None
            assert http.get("/labeling/api/health").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(made) - len(listed["items"]), err
    _no_traceback(err)
    assert LabelStore(db).progress("odd").mine == len(listed["items"])


def test_suggest_and_export_over_odd_files(odd, tmp_path: Path) -> None:
    folder, _ = odd
    db = tmp_path / "labels.sqlite"
    done = _run("-m", "labeling", "suggest", "--images", str(folder), "--db", str(db), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    _no_traceback(done.stderr)
    store = LabelStore(db)
    for k, item in enumerate(store.items()):
        store.save(item, "odd", {"gender": k % 2, "age_group": 1, "glasses": 0, "pose": 1, "teeth": 0})
    out = tmp_path / "export"
    done = _run("-m", "labeling", "export", "--images", str(folder), "--db", str(db), "--out", str(out),
                "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    _no_traceback(done.stderr)
    import datasets

    exported = datasets.load_from_disk(str(out))
    rows = sum(len(exported[s]) for s in exported)
    assert rows == len(store.items())
    for split in exported.values():
        for image in split["image"]:  # every exported image decodes
            image.load()


def test_generation_info_refuses_each_in_one_line(odd, capsys) -> None:
    from generation.cli import main

    folder, made = odd
    for name in sorted(made):
        code = main(["info", str(folder / name)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (name, code, err[-2000:])
        assert name in err or str(folder) in err, (name, err)
    done = _run("-m", "generation", "info", str(folder / "cmyk.jpg"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "cmyk.jpg" in done.stderr, done.stderr
