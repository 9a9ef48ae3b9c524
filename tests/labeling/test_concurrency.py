"""Several annotators at once lose nothing: 16 HTTP clients x 50 saves, and 4 processes on one database file."""

from __future__ import annotations

import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labeling import LabelStore, load_catalog
from labeling.app import LabelingApp
from labeling.client import api_session

CLIENTS, SAVES = 16, 50


def _plan(client: int, ids: list[str], names: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """50 distinct (item, attribute, value) saves for one client."""
    return [(ids[k % len(ids)], names[k // len(ids)], (client + k) % 2) for k in range(SAVES)]


def test_sixteen_clients_fifty_saves_each(tmp_path: Path, faces: Path, server_factory) -> None:
    db = tmp_path / "labels.sqlite"
    app = LabelingApp(LabelStore(db), load_catalog(faces, progress=False), suggestions=False, progress=False)
    server = server_factory(app, ui=False)
    ids, names = app.ids, app.attributes.names

    def client(c: int) -> list[int]:
        with api_session(server.url, timeout=60) as http:
            out = []
            for item, name, value in _plan(c, ids, names):
                r = http.post("/labeling/api/save", json={"item_id": item, "annotator": f"client{c:02d}",
                                                          "labels": {name: value}})
                assert r.status_code == 200, r.text
                out.append(r.json()["save_id"])
            return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        save_ids = [s for ids_ in pool.map(client, range(CLIENTS)) for s in ids_]
    assert len(save_ids) == len(set(save_ids)) == CLIENTS * SAVES

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = conn.execute("SELECT save_id, annotator, item_id, attribute, value FROM labels").fetchall()
    assert len(rows) == CLIENTS * SAVES
    assert sorted(r[0] for r in rows) == sorted(save_ids)
    expected = {(f"client{c:02d}", item, name, value)
                for c in range(CLIENTS) for item, name, value in _plan(c, ids, names)}
    assert {r[1:] for r in rows} == expected


def _writer(db: str, worker: int, ids: list[str]) -> None:
    store = LabelStore(db)
    for k in range(50):
        store.save(ids[k % len(ids)], f"proc{worker}", {"pose": k % 2, "teeth": worker % 2})


def test_processes_share_one_database(tmp_path: Path, store: LabelStore) -> None:
    ids = store.items()
    ctx = multiprocessing.get_context("fork")  # Linux; spawn would re-import torch via the conftest
    procs = [ctx.Process(target=_writer, args=(str(store.path), w, ids)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    history = store.history()
    assert len(history) == 4 * 50 * 2
    assert len({row[1] for row in history}) == 4 * 50  # one save per call, none merged or lost
    assert store.integrity_check() == "ok"
    current = store.labels()
    assert len(current) == 4 * len(ids) * 2  # latest value per (proc, item, attribute)
