"""Soak: 16 annotators x 100 saves over HTTP while the server process is SIGKILLed and restarted twice.

Clients retry a save whose reply was lost, with the same idempotency key. Every acknowledged save must be in the
database exactly once, no save may be stored twice (a save the server committed just before being killed is
answered from its stored key when retried), and the database must pass ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labeling import LabelStore, load_catalog
from labeling.client import LabelingClient

CLIENTS, SAVES, KILLS = 16, 100, 2


def _serve(db: str, faces: str, port: int) -> None:
    """The server process (forked): the API on a fixed port, so clients find it again after a restart."""
    from labeling.app import LabelingApp, serve_forever, start_server

    app = LabelingApp(LabelStore(db), load_catalog(faces, progress=False), suggestions=False, progress=False)
    serve_forever(start_server(app, "127.0.0.1", port, ui=False), app)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server on port {port} did not come up")


def test_sixteen_annotators_through_two_sigkills(tmp_path: Path, faces: Path) -> None:
    db = tmp_path / "labels.sqlite"
    ids = LabelStore(db)
    ids.add_items(load_catalog(faces, progress=False).ids())
    items, names = ids.items(), ids.attributes.names
    port = _free_port()
    ctx = multiprocessing.get_context("fork")  # fast restarts: the child has everything imported already

    def start() -> multiprocessing.Process:
        proc = ctx.Process(target=_serve, args=(str(db), str(faces), port), daemon=True)
        proc.start()
        _wait_listening(port, time.monotonic() + 60)
        return proc

    server = start()
    acked = [0]
    lock = threading.Lock()
    plans = {c: [(items[k % len(items)], names[k // len(items)], (c + k) % 2) for k in range(SAVES)]
             for c in range(CLIENTS)}

    def client(c: int) -> tuple[list[tuple[str, int]], int]:
        out = []
        with LabelingClient(f"http://127.0.0.1:{port}", timeout=20, retry_for=90) as http:
            for k, (item, name, value) in enumerate(plans[c]):
                key = f"soak-{c:02d}-{k:03d}"
                reply = http.save(item, {name: value}, annotator=f"annotator{c:02d}", key=key)
                out.append((key, reply["save_id"]))
                with lock:
                    acked[0] += 1
        return out, http.retries

    kills = []
    start_time = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, c) for c in range(CLIENTS)]
        for k in range(1, KILLS + 1):  # kill at one third and two thirds of the acknowledged saves
            while acked[0] < k * CLIENTS * SAVES // (KILLS + 1) and not all(f.done() for f in futures):
                time.sleep(0.01)
            os.kill(server.pid, signal.SIGKILL)
            server.join(10)
            kills.append(acked[0])
            server = start()
        results = [f.result() for f in futures]
    elapsed = time.monotonic() - start_time
    os.kill(server.pid, signal.SIGKILL)
    server.join(10)

    assert len(kills) == KILLS and all(0 < n < CLIENTS * SAVES for n in kills), kills
    retries = sum(r for _, r in results)
    assert retries > 0, "no reply was lost: the kills did not hit the clients"
    acknowledged = {(f"annotator{c:02d}", key): save_id for c, (out, _) in enumerate(results) for key, save_id in out}
    assert len(acknowledged) == CLIENTS * SAVES

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT save_id, annotator, item_id, attribute, value FROM labels").fetchall()
    assert len(rows) == CLIENTS * SAVES, f"{len(rows) - CLIENTS * SAVES} label rows too many"  # none twice
    assert conn.execute("SELECT COUNT(*) FROM saves").fetchone()[0] == CLIENTS * SAVES
    stored = {save_id: (annotator, item, name, value) for save_id, annotator, item, name, value in rows}
    keys = dict(((a, k), s) for a, k, s in conn.execute("SELECT annotator, key, save_id FROM request_keys"))
    for (annotator, key), save_id in acknowledged.items():  # each acknowledged save: there, once, as sent
        c, k = int(annotator[-2:]), int(key[-3:])
        item, name, value = plans[c][k]
        assert keys[(annotator, key)] == save_id and stored[save_id] == (annotator, item, name, value)
    per_triple = conn.execute("SELECT COUNT(*) FROM (SELECT annotator, item_id, attribute, COUNT(*) AS n FROM labels "
                              "GROUP BY annotator, item_id, attribute HAVING n > 1)").fetchone()[0]
    assert per_triple == 0
    print(f"soak: {CLIENTS * SAVES} saves acknowledged in {elapsed:.1f} s through {KILLS} SIGKILLs "
          f"(at {kills} acknowledged), {retries} resent after a lost reply, 0 lost, 0 stored twice")
    assert elapsed < 120
