"""A server for a team: scrypt-hashed users file managed by `labeling users`, logins that do not tell which names
exist, throttling after failed logins, and TLS."""

from __future__ import annotations

import os
import pty
import select
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from labeling import LabelingError, LabelStore, load_catalog
from labeling.app import LabelingApp
from labeling.cli import main
from labeling.client import api_session
from labeling.security import LoginThrottle
from labeling.users import Users, add_user, load_users

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def _in_terminal(args: list[str], typed: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run a command on a pseudo-terminal (as a person would), typing ``typed`` lines; returns (status, screen)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session whose controlling terminal is the pty, where getpass reads
        os.execve(sys.executable, [sys.executable, *args], ENV)
    screen, pending, answered, deadline = b"", list(typed), 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the command ended
                    break
                if not chunk:
                    break
                screen += chunk
                # getpass discards typed-ahead input, so answer each prompt once it is on the screen
                prompts = screen.count(b"password for ") + screen.count(b"again: ")
                while pending and answered < prompts:
                    os.write(fd, pending.pop(0).encode() + b"\n")
                    answered += 1
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), screen.decode(errors="replace")


def test_users_add_list_remove_never_echo_or_store_the_password(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    code, screen = _in_terminal(["-m", "labeling", "users", "add", "--file", str(users), "alice"],
                                ["correct horse 42", "correct horse 42"])
    assert code == 0, screen
    assert "password for alice:" in screen and "added alice" in screen
    assert "correct horse" not in screen  # not echoed
    text = users.read_text()
    assert "correct horse" not in text and text.count("alice:scrypt:16384:8:1:") == 1
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    assert load_users(users).check("alice", "correct horse 42")
    assert not load_users(users).check("alice", "correct horse 43")

    code, screen = _in_terminal(["-m", "labeling", "users", "add", "--file", str(users), "bob"], ["one", "two"])
    assert code == 2 and "error: the two passwords differ" in screen
    assert "bob" not in users.read_text()
    assert main(["users", "list", "--file", str(users)]) == 0
    assert main(["users", "remove", "--file", str(users), "alice"]) == 0
    assert "alice" not in users.read_text()
    assert main(["users", "remove", "--file", str(users), "alice"]) == 2


def test_old_plain_users_file_is_refused_with_how_to_convert(tmp_path: Path, faces: Path, capsys) -> None:
    old = tmp_path / "users.txt"
    old.write_text("alice:s3cret\n")
    code = main(["serve", "--db", str(tmp_path / "db.sqlite"), "--images", str(faces), "--auth", str(old),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {old}:1: a plain-text password") and "python -m labeling users add" in err
    assert "s3cret" not in err and not (tmp_path / "db.sqlite").exists()


def test_unknown_names_take_as_long_as_wrong_passwords() -> None:
    users = Users.from_passwords({"alice": "s3cret"})
    users.check("alice", "warm-up")

    known, unknown = [], []
    for _ in range(11):  # interleaved, so that load from other processes hits both alike
        for name, times in (("alice", known), ("mallory", unknown)):
            start = time.perf_counter()
            assert not users.check(name, "wrong")
            times.append(time.perf_counter() - start)
    known, unknown = statistics.median(known), statistics.median(unknown)
    assert known > 0.005, known  # a real scrypt ran (not a string comparison)
    assert 0.5 < unknown / known < 2.0, (known, unknown)


def test_failed_logins_are_throttled(tmp_path: Path, faces: Path, server_factory) -> None:
    db = tmp_path / "db.sqlite"
    app = LabelingApp(LabelStore(db), load_catalog(faces, progress=False),
                      users=Users.from_passwords({"alice": "s3cret", "bob": "pw-b"}), suggestions=False,
                      progress=False)
    app.throttle = LoginThrottle(limit=5, window=300.0, lockout=3.0)
    server = server_factory(app, ui=False)
    with api_session(server.url, timeout=30) as http:
        for _ in range(app.throttle.limit):
            assert http.get("/labeling/api/progress", auth=("alice", "guess")).status_code == 401
        locked = http.get("/labeling/api/progress", auth=("alice", "s3cret"))  # right password, too late
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        # the lockout covers the client address too (guessing other names from it), not people elsewhere
        assert http.get("/labeling/api/progress", auth=("bob", "pw-b")).status_code == 429
    time.sleep(3.5)  # the lockout is over
    with api_session(server.url, timeout=30) as http:
        assert http.get("/labeling/api/progress", auth=("alice", "s3cret")).status_code == 200


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with openssl as the README's recipe does."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed for the TLS test (apt-get install openssl)", pytrace=False)
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls(tmp_path: Path, faces: Path, server_factory, certificate) -> None:
    cert, key = certificate
    app = LabelingApp(LabelStore(tmp_path / "db.sqlite"), load_catalog(faces, progress=False),
                      users=Users.from_passwords({"alice": "s3cret"}), suggestions=False, progress=False)
    server = server_factory(app, ssl_certfile=str(cert), ssl_keyfile=str(key))
    assert server.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cert))
    with api_session(server.url, timeout=30, verify=context, auth=("alice", "s3cret")) as http:
        r = http.post("/labeling/api/save", json={"item_id": "seed0000001", "labels": {"pose": 1}})
        assert r.status_code == 200, r.text
        assert http.get("/").status_code == 200
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
        httpx.get(server.url.replace("https://", "http://") + "/labeling/api/health", timeout=10)


def test_tls_options_are_checked(tmp_path: Path, faces: Path, capsys, certificate) -> None:
    cert, key = certificate
    base = ["serve", "--db", str(tmp_path / "db.sqlite"), "--images", str(faces), "--no-progress"]
    for extra, message in ((["--ssl-certfile", str(cert)], "--ssl-certfile and --ssl-keyfile go together"),
                           (["--ssl-certfile", str(cert), "--ssl-keyfile", str(tmp_path / "nope.pem")],
                            "no such file"),
                           (["--ssl-certfile", str(key), "--ssl-keyfile", str(cert)], "not a certificate")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    with pytest.raises(LabelingError, match="no users"):
        Users({})
    add_user(tmp_path / "u.txt", "alice", "pw")
    assert load_users(tmp_path / "u.txt").names() == ["alice"]


def test_ui_login_form_is_throttled(tmp_path: Path, faces: Path, server_factory) -> None:
    app = LabelingApp(LabelStore(tmp_path / "db.sqlite"), load_catalog(faces, progress=False),
                      users=Users.from_passwords({"zoe": "pw-1"}), suggestions=False, progress=False)
    server = server_factory(app)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/login", data={"username": "zoe", "password": "pw-1"}).status_code == 200
        for _ in range(app.throttle.limit):
            assert http.post("/login", data={"username": "zoe", "password": "nope"}).status_code >= 400
        assert http.post("/login", data={"username": "zoe", "password": "pw-1"}).status_code == 429
        foreign = http.post("/login", data={"username": "zoe", "password": "pw-1"},
                            headers={"Origin": "http://127.0.0.1:1"})
        assert foreign.status_code == 403  # a login form on another site cannot log the browser in
