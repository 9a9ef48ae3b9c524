"""Durable multi-annotator label storage in SQLite (WAL mode, one transaction per save).

Every save appends rows, one per (item, annotator, attribute, value, time); nothing is updated in place except
the ``undone`` flag of a save, so the full history stays and undo is a flag flip. Current labels are the latest
non-undone row per (item, annotator, attribute). Each thread gets its own connection; writers take the write
lock up front (``BEGIN IMMEDIATE``) and wait for each other through SQLite's busy timeout, so several annotators
(threads or processes) saving at once lose nothing.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labeling.attributes import DEFAULT_ATTRIBUTES, AttributeSet
from labeling.errors import LabelingError

__all__ = ["Label", "LabelStore", "Progress", "Shown", "validate_item_id", "validate_annotator",
           "validate_model_annotator"]

_ITEM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ANNOTATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# Machine annotators: model:<source>@<version>. A person's name cannot contain ':', so never looks like one.
_MODEL_ANNOTATOR = re.compile(r"^model:[a-z0-9][a-z0-9._-]{0,39}@[A-Za-z0-9][A-Za-z0-9._+-]{0,39}$")
MARK_KINDS = ("skip", "flag")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (item_id TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS saves (
    save_id INTEGER PRIMARY KEY AUTOINCREMENT,
    annotator TEXT NOT NULL,
    kind TEXT NOT NULL,
    time REAL NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    save_id INTEGER NOT NULL REFERENCES saves(save_id),
    item_id TEXT NOT NULL REFERENCES items(item_id),
    annotator TEXT NOT NULL,
    attribute TEXT NOT NULL,
    value INTEGER NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_key ON labels (annotator, item_id, attribute);
CREATE TABLE IF NOT EXISTS marks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    save_id INTEGER NOT NULL REFERENCES saves(save_id),
    item_id TEXT NOT NULL REFERENCES items(item_id),
    annotator TEXT NOT NULL,
    kind TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS suggestions (
    item_id TEXT NOT NULL,
    attribute TEXT NOT NULL,
    source TEXT NOT NULL,
    value INTEGER NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY (item_id, attribute, source)
);
CREATE TABLE IF NOT EXISTS shown (
    save_id INTEGER NOT NULL REFERENCES saves(save_id),
    item_id TEXT NOT NULL,
    attribute TEXT NOT NULL,
    source TEXT NOT NULL,
    value INTEGER NOT NULL,
    confidence REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS shown_save ON shown (save_id);
"""
# Columns added after the first release, applied to older databases when they are opened.
_ADDED_COLUMNS = (("labels", "confidence", "REAL"), ("labels", "sure", "INTEGER"))

_CURRENT = """
SELECT item_id, annotator, attribute, value, time, confidence, sure FROM (
    SELECT l.item_id, l.annotator, l.attribute, l.value, l.time, l.confidence, l.sure,
           ROW_NUMBER() OVER (PARTITION BY l.annotator, l.item_id, l.attribute ORDER BY l.id DESC) AS rn
    FROM labels l JOIN saves s ON s.save_id = l.save_id
    WHERE s.undone = 0 {where}
) WHERE rn = 1 ORDER BY item_id, annotator, attribute
"""


def validate_item_id(item_id: object) -> str:
    """An item id safe to use as a file stem (letters, digits, ``._-``; no path separators, no ``..``)."""
    if not isinstance(item_id, str) or not _ITEM_ID.match(item_id) or ".." in item_id:
        raise LabelingError(f"invalid item id {item_id!r}: use letters, digits, '.', '_', '-' (no '..', max 128)")
    return item_id


def validate_annotator(name: object) -> str:
    if not isinstance(name, str) or not _ANNOTATOR.match(name):
        raise LabelingError(f"invalid annotator name {name!r}: use letters, digits, '.', '_', '@', '-' (max 64)")
    return name


def validate_model_annotator(name: object) -> str:
    """A machine annotator's name: ``model:<source>@<version>``."""
    if not isinstance(name, str) or not _MODEL_ANNOTATOR.match(name):
        raise LabelingError(f"invalid model annotator {name!r}: expected model:<source>@<version>")
    return name


@dataclass(frozen=True)
class Label:
    """One current label."""

    item_id: str
    annotator: str
    attribute: str
    value: int
    time: float
    confidence: float | None = None  # machine labels only
    sure: int | None = None  # machine labels only: 1 when the model marks the answer as sure


@dataclass(frozen=True)
class Shown:
    """A suggestion that was pre-selected for a person when they saved (their value is in the same save)."""

    save_id: int
    item_id: str
    attribute: str
    source: str
    value: int
    confidence: float


@dataclass(frozen=True)
class Progress:
    """Items fully labelled by this annotator and by anyone, out of all items."""

    mine: int
    everyone: int
    total: int


class LabelStore:
    """Labels of several annotators in one SQLite file (see the module docstring for the guarantees)."""

    def __init__(self, db_path: str | Path, attributes: AttributeSet = DEFAULT_ATTRIBUTES, *,
                 timeout: float = 60.0) -> None:
        self.path = Path(db_path)
        self.attributes = attributes
        self.timeout = timeout
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        conn.executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
        with self._write(conn):
            for table, column, kind in _ADDED_COLUMNS:
                if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            row = conn.execute("SELECT value FROM meta WHERE key = 'attributes'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('attributes', ?)", (attributes.describe(),))
            elif row[0] != attributes.describe():
                raise LabelingError(f"{self.path}: the database was made for attributes {row[0]!r}, "
                                    f"not {attributes.describe()!r}")

    # -- connections -------------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as exc:
                raise LabelingError(f"{self.path}: not a usable SQLite database ({exc})") from None
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _write(self, conn: sqlite3.Connection | None = None) -> LabelStore._Tx:
        return LabelStore._Tx(conn or self._conn())

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- items -------------------------------------------------------------------------------------------------
    def add_items(self, item_ids: Iterable[str]) -> int:
        """Register items (idempotent; order of first registration is kept). Returns how many were new."""
        ids = [validate_item_id(i) for i in item_ids]
        with self._write() as conn:
            start = conn.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM items").fetchone()[0]
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO items (item_id, position) VALUES (?, ?)",
                             [(item_id, start + k) for k, item_id in enumerate(ids)])
            return conn.total_changes - before

    def items(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT item_id FROM items ORDER BY position")]

    # -- writes ------------------------------------------------------------------------------------------------
    def save(self, item_id: str, annotator: str, labels: dict[str, object], *,
             shown: Sequence[tuple[str, str, str, int, float]] = ()) -> int:
        """Store ``{attribute: value}`` for one item in one transaction; returns the save id (for undo)."""
        return self.save_many(annotator, [(item_id, labels)], shown=shown)

    def save_many(self, annotator: str, entries: Sequence[tuple[str, dict[str, object]]], *,
                  shown: Sequence[tuple[str, str, str, int, float]] = ()) -> int:
        """Store labels for several items (a grid page) in one transaction, undone together.

        ``shown`` lists the suggestions pre-selected for this person as (item, attribute, source, value,
        confidence); they are stored with the save, so the labels stay the person's and the changes they made
        to suggestions can be counted.
        """
        annotator = validate_annotator(annotator)
        checked = [(validate_item_id(item_id), self.attributes.validate(labels)) for item_id, labels in entries]
        if not checked:
            raise LabelingError("nothing to save")
        now = time.time()
        with self._write() as conn:
            self._require_items(conn, {item_id for item_id, _ in checked})
            save_id = conn.execute("INSERT INTO saves (annotator, kind, time) VALUES (?, 'label', ?)",
                                   (annotator, now)).lastrowid
            conn.executemany(
                "INSERT INTO labels (save_id, item_id, annotator, attribute, value, time) VALUES (?, ?, ?, ?, ?, ?)",
                [(save_id, item_id, annotator, name, value, now)
                 for item_id, labels in checked for name, value in labels.items()])
            if shown:
                conn.executemany("INSERT INTO shown (save_id, item_id, attribute, source, value, confidence) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", [(save_id, *row) for row in shown])
        return save_id

    def save_machine(self, annotator: str, rows: Sequence[tuple[str, str, int, float, bool]], *,
                     skip_done: bool = True) -> int:
        """Store a model's labels, (item, attribute, value, confidence, sure) rows, in one transaction.

        With ``skip_done`` items that already have any label from this model are left alone inside the same
        transaction, so a rerun (or a second process) never duplicates rows. Returns the rows written.
        """
        annotator = validate_model_annotator(annotator)
        checked = [(validate_item_id(i), self.attributes[a].name, self.attributes[a].index(v), float(c), int(bool(ok)))
                   for i, a, v, c, ok in rows]
        if not checked:
            return 0
        now = time.time()
        with self._write() as conn:
            self._require_items(conn, {i for i, *_ in checked})
            if skip_done:
                done = self._machine_done(conn, annotator)
                checked = [row for row in checked if row[0] not in done]
                if not checked:
                    return 0
            save_id = conn.execute("INSERT INTO saves (annotator, kind, time) VALUES (?, 'model', ?)",
                                   (annotator, now)).lastrowid
            conn.executemany("INSERT INTO labels (save_id, item_id, annotator, attribute, value, time, confidence, "
                             "sure) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [(save_id, i, annotator, a, v, now, c, ok) for i, a, v, c, ok in checked])
        return len(checked)

    @staticmethod
    def _machine_done(conn: sqlite3.Connection, annotator: str) -> set[str]:
        return {r[0] for r in conn.execute("SELECT DISTINCT item_id FROM labels WHERE annotator = ?", (annotator,))}

    def machine_done(self, annotator: str) -> set[str]:
        """Items that already have labels from this model."""
        return self._machine_done(self._conn(), annotator)

    def shown(self) -> list[Shown]:
        """Suggestions pre-selected for people, of saves that were not undone."""
        return [Shown(*row) for row in self._conn().execute(
            "SELECT w.save_id, w.item_id, w.attribute, w.source, w.value, w.confidence FROM shown w "
            "JOIN saves s ON s.save_id = w.save_id WHERE s.undone = 0 ORDER BY w.save_id")]

    def mark(self, item_id: str, annotator: str, kind: str) -> int:
        """Record a skip or a flag (for review) of an item; undoable like a save."""
        annotator, item_id = validate_annotator(annotator), validate_item_id(item_id)
        if kind not in MARK_KINDS:
            raise LabelingError(f"unknown mark {kind!r} (expected one of {MARK_KINDS})")
        now = time.time()
        with self._write() as conn:
            self._require_items(conn, {item_id})
            save_id = conn.execute("INSERT INTO saves (annotator, kind, time) VALUES (?, ?, ?)",
                                   (annotator, kind, now)).lastrowid
            conn.execute("INSERT INTO marks (save_id, item_id, annotator, kind, time) VALUES (?, ?, ?, ?, ?)",
                         (save_id, item_id, annotator, kind, now))
        return save_id

    def undo(self, annotator: str) -> list[str]:
        """Undo this annotator's latest save, skip or flag; returns the items it touched ([] if none left)."""
        annotator = validate_annotator(annotator)
        with self._write() as conn:
            row = conn.execute("SELECT save_id FROM saves WHERE annotator = ? AND undone = 0 AND kind != 'model' "
                               "ORDER BY save_id DESC LIMIT 1", (annotator,)).fetchone()
            if row is None:
                return []
            conn.execute("UPDATE saves SET undone = 1 WHERE save_id = ?", row)
            items = conn.execute("SELECT DISTINCT item_id FROM labels WHERE save_id = ? UNION "
                                 "SELECT DISTINCT item_id FROM marks WHERE save_id = ?", (row[0], row[0])).fetchall()
        order = {item_id: k for k, item_id in enumerate(self.items())}
        return sorted((r[0] for r in items), key=lambda i: order.get(i, 0))

    def _require_items(self, conn: sqlite3.Connection, item_ids: set[str]) -> None:
        marks = ",".join("?" * len(item_ids))
        known = {r[0] for r in conn.execute(f"SELECT item_id FROM items WHERE item_id IN ({marks})",
                                            sorted(item_ids))}
        missing = sorted(item_ids - known)
        if missing:
            raise LabelingError(f"unknown item id(s) {', '.join(missing[:5])} (add them with add_items first)")

    # -- reads -------------------------------------------------------------------------------------------------
    def labels(self, annotator: str | None = None) -> list[Label]:
        """Current labels: the latest non-undone value per (item, annotator, attribute)."""
        where, params = ("AND l.annotator = ?", (annotator,)) if annotator else ("", ())
        return [Label(*row) for row in self._conn().execute(_CURRENT.format(where=where), params)]

    def item_labels(self, item_id: str) -> list[Label]:
        """Current labels of one item, every annotator (people and models)."""
        return [Label(*row) for row in self._conn().execute(_CURRENT.format(where="AND l.item_id = ?"), (item_id,))]

    def current(self, item_id: str, annotator: str) -> dict[str, int]:
        """This annotator's current labels of one item."""
        rows = self._conn().execute(_CURRENT.format(where="AND l.annotator = ? AND l.item_id = ?"),
                                    (annotator, item_id))
        return {attribute: value for _, _, attribute, value, *_ in rows}

    def marked(self, annotator: str | None = None, kind: str | None = None) -> set[str]:
        """Items skipped or flagged (not undone), by this annotator when given."""
        sql = "SELECT m.item_id FROM marks m JOIN saves s ON s.save_id = m.save_id WHERE s.undone = 0"
        params: list[str] = []
        if annotator:
            sql, params = sql + " AND m.annotator = ?", [*params, annotator]
        if kind:
            sql, params = sql + " AND m.kind = ?", [*params, kind]
        return {r[0] for r in self._conn().execute(sql, params)}

    def history(self) -> list[tuple]:
        """Every label row ever written: (id, save_id, item_id, annotator, attribute, value, time, undone)."""
        return self._conn().execute(
            "SELECT l.id, l.save_id, l.item_id, l.annotator, l.attribute, l.value, l.time, s.undone "
            "FROM labels l JOIN saves s ON s.save_id = l.save_id ORDER BY l.id").fetchall()

    def annotators(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT DISTINCT annotator FROM saves ORDER BY annotator")]

    def complete_items(self, annotator: str | None = None) -> set[str]:
        """Items with every attribute labelled (by this annotator, or by at least one person: models excluded)."""
        counts: dict[tuple[str, str], int] = {}
        for label in self.labels(annotator):
            if annotator is None and label.annotator.startswith("model:"):
                continue
            key = (label.item_id, label.annotator)
            counts[key] = counts.get(key, 0) + 1
        return {item for (item, _), n in counts.items() if n == len(self.attributes)}

    def progress(self, annotator: str) -> Progress:
        total = self._conn().execute("SELECT COUNT(*) FROM items").fetchone()[0]
        return Progress(len(self.complete_items(annotator)), len(self.complete_items()), total)

    def next_items(self, annotator: str, order: Sequence[str] | None = None, limit: int = 1) -> list[str]:
        """The next items this annotator has neither finished, skipped nor flagged, in ``order`` (default: as added)."""
        done = self.complete_items(annotator) | self.marked(annotator)
        out = []
        for item_id in order if order is not None else self.items():
            if item_id not in done:
                out.append(item_id)
                if len(out) == limit:
                    break
        return out

    # -- suggestions -------------------------------------------------------------------------------------------
    def put_suggestions(self, rows: Iterable[tuple[str, str, str, int, float]]) -> None:
        """Store (item, attribute, source, value, confidence) suggestions, replacing older ones of that source."""
        with self._write() as conn:
            conn.executemany("INSERT OR REPLACE INTO suggestions (item_id, attribute, source, value, confidence) "
                             "VALUES (?, ?, ?, ?, ?)", list(rows))

    def suggestions(self, item_id: str | None = None) -> list[tuple[str, str, str, int, float]]:
        sql = "SELECT item_id, attribute, source, value, confidence FROM suggestions"
        rows = self._conn().execute(sql + (" WHERE item_id = ?" if item_id else ""), (item_id,) if item_id else ())
        return rows.fetchall()

    def save_count(self) -> int:
        """Saves, skips, flags ever written (a cheap change counter)."""
        return self._conn().execute("SELECT COALESCE(MAX(save_id), 0) FROM saves").fetchone()[0]

    def integrity_check(self) -> str:
        return self._conn().execute("PRAGMA integrity_check").fetchone()[0]
