"""Bad input gets one clear error and changes nothing; the app stays up around corrupt files."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import httpx
import pytest

from labeling import DEFAULT_ATTRIBUTES, LabelingError, LabelStore, load_attributes, load_catalog
from labeling.app import LabelingApp
from labeling.cli import main
from labeling.client import api_session


def _corrupt(faces: Path) -> None:
    (faces / "manifest.jsonl").unlink()  # a plain folder
    (faces / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (faces / "seed0000001.png").read_bytes()
    (faces / "cut.png").write_bytes(good[: len(good) // 2])


def test_corrupt_png_is_skipped_by_name_and_app_stays_up(tmp_path: Path, faces: Path, server_factory) -> None:
    _corrupt(faces)
    catalog = load_catalog(faces, progress=False)
    assert sorted(name for name, _ in catalog.skipped) == ["broken.png", "cut.png"]
    assert len(catalog.items) == 20
    app = LabelingApp(LabelStore(tmp_path / "db.sqlite"), catalog, suggestions=False, progress=False)
    server = server_factory(app)
    with api_session(server.url, timeout=30) as http:
        listed = http.get("/labeling/api/items").json()
        assert [s["file"] for s in listed["skipped"]] == ["broken.png", "cut.png"]
        assert "broken" not in listed["items"]
        page = http.get("/").text
        assert page.startswith("<!") or "<html" in page.lower()
        config = http.get("/config").text  # the UI's notice names the skipped files
        assert "broken.png" in config and "cut.png" in config
        assert http.get("/labeling/api/image/seed0000003").content == (faces / "seed0000003.png").read_bytes()


def test_api_refuses_bad_labels_and_ids(tmp_path: Path, faces: Path, server_factory) -> None:
    db = tmp_path / "db.sqlite"
    app = LabelingApp(LabelStore(db), load_catalog(faces, progress=False), suggestions=False, progress=False)
    server = server_factory(app, ui=False)
    cases = [
        ({"item_id": "seed0000000", "annotator": "a", "labels": {"gender": 2}}, "unknown value 2"),
        ({"item_id": "seed0000000", "annotator": "a", "labels": {"gender": "unknown"}}, "unknown value 'unknown'"),
        ({"item_id": "seed0000000", "annotator": "a", "labels": {"gender": True}}, "is a bool"),
        ({"item_id": "seed0000000", "annotator": "a", "labels": {"hair": 1}}, "unknown attribute 'hair'"),
        ({"item_id": "seed0000000", "annotator": "a", "labels": {"gender": 1, "pose": 7}}, "unknown value 7"),
        ({"item_id": "../etc/passwd", "annotator": "a", "labels": {"gender": 1}}, "invalid item id"),
        ({"item_id": "seed9999999", "annotator": "a", "labels": {"gender": 1}}, "unknown item id"),
        ({"item_id": "seed0000000", "annotator": "a b", "labels": {"gender": 1}}, "invalid annotator"),
        ({"item_id": "seed0000000", "annotator": "a", "labels": {}}, "non-empty mapping"),
    ]
    with api_session(server.url, timeout=30) as http:
        for payload, message in cases:
            r = http.post("/labeling/api/save", json=payload)
            assert r.status_code == 400 and message in r.json()["detail"], (payload, r.text)
        assert http.post("/labeling/api/save", content=b"{not json",
                         headers={"Content-Type": "application/json"}).status_code == 400
        assert http.post("/labeling/api/save", json=cases[0][0], headers={"Idempotency-Key": "x"}).status_code == 400
        for bad in ("..%2F..%2Fetc%2Fpasswd", "..passwd", "manifest.jsonl", "seed0000000.png"):
            assert http.get(f"/labeling/api/image/{bad}").status_code in (400, 404)
        ok = http.post("/labeling/api/save", json={"item_id": "seed0000000", "annotator": "a",
                                                    "labels": {"gender": "female", "pose": 0}})
        assert ok.status_code == 200
    rows = sqlite3.connect(db).execute("SELECT item_id, attribute, value FROM labels ORDER BY id").fetchall()
    assert rows == [("seed0000000", "gender", 1), ("seed0000000", "pose", 0)]  # only the good save landed


def test_auth_names_the_annotator(tmp_path: Path, faces: Path, server_factory) -> None:
    from labeling.users import add_user, load_users

    users_file = tmp_path / "users.txt"
    add_user(users_file, "alice", "s3cret")
    add_user(users_file, "bob", "hunter2")
    db = tmp_path / "db.sqlite"
    app = LabelingApp(LabelStore(db), load_catalog(faces, progress=False), users=load_users(users_file),
                      suggestions=False, progress=False)
    server = server_factory(app, ui=False)
    save = {"item_id": "seed0000000", "labels": {"teeth": 1}}
    with api_session(server.url, timeout=30) as http:
        assert http.post("/labeling/api/save", json=save).status_code == 401
        assert http.post("/labeling/api/save", json=save, auth=("alice", "wrong")).status_code == 401
        assert http.get("/labeling/api/image/seed0000000").status_code == 401
        assert http.post("/labeling/api/save", json={**save, "annotator": "bob"},
                         auth=("alice", "s3cret")).status_code == 403
        assert http.post("/labeling/api/save", json=save, auth=("bob", "hunter2")).status_code == 200
    assert sqlite3.connect(db).execute("SELECT annotator FROM labels").fetchall() == [("bob",)]


def test_non_loopback_bind_needs_auth(tmp_path: Path, faces: Path, capsys) -> None:
    code = main(["serve", "--db", str(tmp_path / "db.sqlite"), "--images", str(faces), "--host", "0.0.0.0",
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--host 0.0.0.0" in err and "requires --auth" in err
    assert not (tmp_path / "db.sqlite").exists()


@pytest.mark.parametrize("text, message", [
    ("alice\n", "expected 'name:scrypt:...'"),
    ("../x:scrypt:16384:8:1:AAAA:AAAA\n", "invalid annotator name"),
    ("# nobody\n", "no users"),
    ("alice:scrypt:16384:8:1:not base64!:AAAA\n", "malformed scrypt hash for 'alice'"),
    ("alice:s3cret\n", "users.txt:1: a plain-text password; passwords are stored hashed now: run "
                        "`python -m labeling users add --file NEWFILE NAME` for each user"),
])
def test_bad_users_file(tmp_path: Path, text: str, message: str) -> None:
    from labeling.users import load_users

    path = tmp_path / "users.txt"
    path.write_text(text)
    with pytest.raises(LabelingError, match=re.escape(message)):
        load_users(path)


def test_bad_sources_and_configs(tmp_path: Path, faces: Path) -> None:
    with pytest.raises(LabelingError, match="no such image folder"):
        load_catalog(tmp_path / "missing")
    manifest = tmp_path / "evil" / "manifest.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"sample_id": "x", "file": "../faces/seed0000000.png"}) + "\n")
    with pytest.raises(LabelingError, match="outside"):
        load_catalog(manifest)
    manifest.write_text("{broken\n")
    with pytest.raises(LabelingError, match=r"manifest.jsonl:1: not JSON"):
        load_catalog(manifest)
    config = tmp_path / "attrs.toml"
    config.write_text('[[attribute]]\nname = "smiling"\nvalues = ["no"]\n')
    with pytest.raises(LabelingError, match="two or more"):
        load_attributes(config)
    config.write_text('[[attribute]]\nname = "smiling"\nvalues = ["no", "yes"]\nkeys = ["u", "y"]\n')
    with pytest.raises(LabelingError, match="key 'u'"):
        load_attributes(config)
    config.write_text('[[attribute]]\nname = "smiling"\nvalues = ["no", "yes"]\n')
    custom = load_attributes(config)
    LabelStore(tmp_path / "custom.sqlite", custom)
    with pytest.raises(LabelingError, match="made for attributes"):
        LabelStore(tmp_path / "custom.sqlite", DEFAULT_ATTRIBUTES)
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LabelingError, match="not a usable SQLite database"):
        LabelStore(tmp_path / "junk.sqlite")


def test_cli_serve_lists_corrupt_files_and_serves(tmp_path: Path, faces: Path) -> None:
    """The real command: corrupt files named on stderr, the app up on 127.0.0.1, Ctrl-C stops it cleanly, even
    when started with SIGINT ignored (as a background job of a script is)."""
    import os
    import signal
    import subprocess
    import sys

    _corrupt(faces)
    inherited = f"parent SIGINT handler {signal.getsignal(signal.SIGINT)}, blocked {signal.pthread_sigmask(0, [])}"
    proc = subprocess.Popen([sys.executable, "-m", "labeling", "serve", "--db", str(tmp_path / "db.sqlite"),
                             "--images", str(faces), "--port", "0", "--no-progress", "--annotator", "cli"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    failed = None
    try:
        line = proc.stdout.readline()
        assert line.startswith("labeling 20 images at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with api_session(url, timeout=60) as http:  # the first connection is answered (tests/labeling/test_startup.py)
            try:
                assert http.get("/labeling/api/next").json()["progress"] == {"mine": 0, "everyone": 0, "total": 20}
                assert http.post("/labeling/api/save", json={"item_id": "seed0000005", "labels": {"glasses": 1}}
                                 ).status_code == 200
            except httpx.HTTPError as exc:  # the server's side too: a stopped server names who stopped it
                failed = f"{type(exc).__name__}: {exc}; serve still running: {proc.poll() is None}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=90)  # generous: CI machines are shared
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"serve ignored SIGINT for 90 s ({inherited})") from None
    assert failed is None, f"{failed}; exit status {proc.returncode}; stderr:\n{err[-3000:]}"
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]  # nor from a background thread at exit
    stops = [x.partition(" (")[0] for x in err.splitlines() if x.startswith("labeling: stopping on ")]
    assert stops == [f"labeling: stopping on SIGINT from pid {os.getpid()}"], err[-3000:]
    assert "skipped broken.png: " in err and "skipped cut.png: " in err
    assert LabelStore(tmp_path / "db.sqlite").current("seed0000005", "cli") == {"glasses": 1}


def test_symlink_out_of_the_folder_is_not_served(tmp_path: Path, faces: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes((faces / "seed0000000.png").read_bytes())
    (faces / "manifest.jsonl").unlink()
    (faces / "sneaky.png").symlink_to(secret)
    catalog = load_catalog(faces, progress=False)
    assert "sneaky" not in catalog.items
    assert [name for name, reason in catalog.skipped if "outside" in reason] == ["sneaky.png"]
