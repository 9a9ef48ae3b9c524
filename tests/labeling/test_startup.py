"""`labeling serve` answers the very first connection made after it says it is ready, every time.

The cause of issue 11's dropped first connection: the first ``/labeling/api/next`` computes the first face's
suggestions in the request thread while the prefetch thread computes the next faces', and both ran dlib's face
detector, one object shared by the process. dlib documents that detector as unsafe to share (it keeps the image
pyramid of the call in progress inside the object). Now and then the process died with SIGSEGV in the middle of
that first reply; the client saw "Server disconnected without sending a response" and the next connection was
refused. Measured on the code of that time (2eff2e5), the original test's steps in a fresh interpreter: 2 of 78
starts crashed so (exit status -11); the fault trace kept whole shows both threads in the detector. The detector
is now used under a lock (``labeling.sources.faceview``), checked by ``tests/labeling/test_faceview.py``.

The command (``labeling.cli.main``) is started 30 times with suggestions on, each in a forked process with SIGINT
ignored, as a background job of a script inherits it. Everything is imported and dlib's models are loaded once,
before the forks, so a start takes a few seconds, not the ten more an interpreter start takes here; what crashed
was the models' use, which every start repeats (a fresh database each time, so the first face's suggestions are
computed, not read back). As soon as the readiness line is out, a raw socket asks for the first face and must get
a complete reply with the models' suggestions; then SIGINT must stop the server with status 0, and the server
must name this test as the sender (a stop signal from any other process is named in the failure, see
``labeling.stopping``).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from labeling.cli import main
from labeling.sources.faceview import view_face

STARTS = 30


def _start(args: list[str], log: Path) -> tuple[int, int]:
    """Fork and run ``main(args)`` in the child (stdout to a pipe, stderr to ``log``); returns (pid, read end)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            os.close(read)
            os.dup2(write, 1)
            os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            code = main(args)
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _readline(fd: int, timeout: float) -> str:
    data, deadline = b"", time.monotonic() + timeout
    while not data.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 1)
            if not chunk:
                break
            data += chunk
    return data.decode()


def _first_request(port: int) -> bytes:
    """One request on a fresh connection, right away; the whole reply (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"GET /labeling/api/next HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply


def _stops(log: Path) -> list[str]:
    """The server's lines saying which signal stopped it and who sent it."""
    return [line for line in log.read_text().splitlines() if line.startswith("labeling: stopping on ")]


def _wait(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def test_first_connection_is_answered_on_every_start(tmp_path: Path, faces: Path) -> None:
    view_face(faces / "seed0000000.png")  # dlib's models loaded before the forks, shared as threads share them
    failures, times = [], []
    for k in range(STARTS):
        log = tmp_path / f"serve{k}.log"
        pid, out = _start(["serve", "--db", str(tmp_path / f"db{k}.sqlite"), "--images", str(faces), "--port", "0",
                           "--no-progress", "--annotator", "cli"], log)
        try:
            line = _readline(out, 120)
            assert line.startswith("labeling 20 images at http://127.0.0.1:"), line + log.read_text()
            start = time.monotonic()
            try:
                reply = _first_request(int(line.split(" at ")[1].split()[0].rsplit(":", 1)[1]))
            except OSError as exc:
                reply = f"{type(exc).__name__}: {exc}".encode()
            times.append(time.monotonic() - start)
            if not (reply.startswith(b"HTTP/1.1 200 ") and b'"item_id":"seed0000000"' in reply
                    and b'"source":"model:' in reply):  # computed by the models, with the prefetch running
                failures.append((k, reply[:200], _stops(log)))
        finally:
            os.kill(pid, signal.SIGINT)
            code = _wait(pid, 90)
            os.close(out)
            if code is None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        assert code == 0, f"start {k}: serve exited with {code} after SIGINT\n{log.read_text()[-3000:]}"
        assert "Traceback" not in log.read_text(), f"start {k}:\n{log.read_text()[-3000:]}"
        stops = [stop.partition(" (")[0] for stop in _stops(log)]  # without the sender's command line
        assert stops == [f"labeling: stopping on SIGINT from pid {os.getpid()}"], log.read_text()[-3000:]
    assert not failures, f"{len(failures)} of {STARTS} first connections failed: {failures}"
    print(f"{STARTS} starts, every first connection answered (first reply {min(times):.2f}-{max(times):.2f} s)")


def test_a_stop_from_another_process_names_that_process(tmp_path: Path, faces: Path) -> None:
    """SIGTERM from a shell (as ``kill`` or ``pkill -f 'labeling serve'`` in another terminal would send it): the
    server stops with status 0 and its stderr names the signal, the sender's pid and its command line."""
    log = tmp_path / "serve.log"
    pid, out = _start(["serve", "--db", str(tmp_path / "db.sqlite"), "--images", str(faces), "--port", "0",
                       "--no-progress", "--no-suggestions", "--annotator", "cli"], log)
    code = None
    try:
        line = _readline(out, 120)
        assert line.startswith("labeling 20 images at http://127.0.0.1:"), line + log.read_text()
        killer = subprocess.Popen(["sh", "-c", f"kill -TERM {pid}; sleep 5"])  # alive while the server looks it up
        code = _wait(pid, 90)
        killer.kill()
        killer.wait()
    finally:
        os.close(out)
        if code is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert code == 0, log.read_text()[-3000:]
    assert _stops(log) == [f"labeling: stopping on SIGTERM from pid {killer.pid} (sh -c kill -TERM {pid}; sleep 5)"], \
        log.read_text()[-3000:]


def test_a_failed_start_gives_the_caller_its_signals_back(tmp_path: Path, faces: Path, capsys) -> None:
    """``main(["serve", ...])`` called in-process (as scripts and tests do) whose server cannot start: the stop
    signals it blocked and the handlers it replaced are the caller's again."""
    def state() -> tuple:
        return (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
                signal.pthread_sigmask(signal.SIG_BLOCK, []))

    before = state()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = main(["serve", "--db", str(tmp_path / "db.sqlite"), "--images", str(faces), "--port",
                     str(taken.getsockname()[1]), "--no-progress", "--no-suggestions"])
    err = capsys.readouterr().err
    assert code == 2 and "could not start the server" in err, err
    assert state() == before


def test_a_crash_leaves_every_threads_stack_on_stderr(tmp_path: Path, faces: Path) -> None:
    """``python -m labeling serve`` in a fresh interpreter (without ``PYTHONFAULTHANDLER``): a fatal signal, as the
    detector's crash raised, prints the threads' Python stacks instead of ending the process without a word."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    proc = subprocess.Popen([sys.executable, "-m", "labeling", "serve", "--db", str(tmp_path / "db.sqlite"),
                             "--images", str(faces), "--port", "0", "--no-progress", "--no-suggestions"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("labeling 20 images at http://127.0.0.1:"), line
        proc.send_signal(signal.SIGSEGV)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGSEGV, err
    assert "Fatal Python error: Segmentation fault" in err and "in serve_forever" in err, err
