"""Idempotency keys: a repeated save, mark or undo with the same key stores nothing more and returns the first
result; the key is written in the same transaction as the rows; an old database gains the table on opening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from labeling import LabelingError, LabelStore


def test_repeated_keys_return_the_first_result(store: LabelStore) -> None:
    first = store.save("seed0000001", "alice", {"pose": 1}, key="key-save-0001")
    assert store.save("seed0000001", "alice", {"pose": 0}, key="key-save-0001") == first  # the retry: no new row
    assert store.current("seed0000001", "alice") == {"pose": 1}
    assert store.save("seed0000001", "bob", {"pose": 0}, key="key-save-0001") != first  # keys are per annotator
    flag = store.mark("seed0000002", "alice", "flag", key="key-flag-0001")
    assert store.mark("seed0000002", "alice", "flag", key="key-flag-0001") == flag
    assert store.undo("alice", key="key-undo-0001") == ["seed0000002"]
    assert store.undo("alice", key="key-undo-0001") == ["seed0000002"]  # undone once, not twice
    assert store.current("seed0000001", "alice") == {"pose": 1}
    assert store.undo("alice", key="key-undo-0002") == ["seed0000001"]
    assert store.undo("alice", key="key-undo-0003") == []
    assert store.undo("alice", key="key-undo-0003") == []
    with pytest.raises(LabelingError, match="already used for a undo"):
        store.save("seed0000001", "alice", {"pose": 1}, key="key-undo-0003")
    with pytest.raises(LabelingError, match="invalid idempotency key"):
        store.save("seed0000001", "alice", {"pose": 1}, key="short")
    rows = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    assert rows == 2


def test_an_old_database_gains_the_key_table(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    LabelStore(db).add_items(["a1"])
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE request_keys")
    conn.execute("ALTER TABLE labels ADD COLUMN note TEXT")  # a later version's additive column
    conn.commit()
    conn.close()
    store = LabelStore(db)
    assert store.save("a1", "alice", {"pose": 1}, key="key-old-0001") == store.save("a1", "alice", {"pose": 1},
                                                                                     key="key-old-0001")
