"""Fixtures for the labelling tests: tiny real face PNGs, a store over them, servers that stop by themselves,
threads released together."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labeling import LabelStore, load_catalog
from labeling.fixtures import make_faces


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    """20 real 64x64 PNG faces plus manifest.jsonl in the generation package's format."""
    folder = tmp_path / "faces"
    make_faces(folder, 20)
    return folder


@pytest.fixture
def store(tmp_path: Path, faces: Path) -> LabelStore:
    store = LabelStore(tmp_path / "labels.sqlite")
    store.add_items(load_catalog(faces, progress=False).ids())
    return store


@pytest.fixture
def server_factory() -> Iterator:
    """Start servers on 127.0.0.1 (any free port); every one is stopped at the end of the test."""
    from labeling.app import start_server

    started = []

    def start(app, **kwargs):
        server = start_server(app, "127.0.0.1", 0, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def together() -> Callable[[Callable[[int], None], int], None]:
    """``together(work, n)`` runs ``work(k)`` for k = 0..n-1 in n threads released at the same moment; what any
    thread raised fails the test, with the thread's number."""

    def run(work: Callable[[int], None], n: int) -> None:
        start, errors = threading.Barrier(n), []

        def body(k: int) -> None:
            try:
                start.wait()
                work(k)
            except Exception as exc:  # noqa: BLE001 - reported below with the thread's number
                errors.append(f"thread {k}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors

    return run
