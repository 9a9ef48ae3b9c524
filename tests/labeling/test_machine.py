"""Machine suggestions asked for by several threads at once, as the app's request, prefetch and UI threads do."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from labeling import LabelStore, load_catalog
from labeling.fixtures import make_faces
from labeling.machine import MachineSuggestions
from labeling.provenance import is_model

THREADS = 4


def test_threads_asking_at_once_get_one_threads_answers_and_each_label_is_stored_once(tmp_path: Path,
                                                                                       together) -> None:
    make_faces(tmp_path / "faces", 16)
    catalog = load_catalog(tmp_path / "faces", progress=False)
    ids = catalog.ids()

    def suggestions(name: str) -> MachineSuggestions:
        store = LabelStore(tmp_path / name)
        store.add_items(ids)
        notices: list[str] = []
        machine = MachineSuggestions(store, notices)
        assert machine.attributes and not notices, notices
        return machine

    alone = suggestions("alone.sqlite")
    expected = {i: alone.for_item(i, catalog.items[i].path) for i in ids}
    shared = suggestions("threads.sqlite")
    got = []

    def ask(k: int) -> None:
        for i in ids[k:] + ids[:k]:  # each thread starts at another face
            got.append((i, shared.for_item(i, catalog.items[i].path)))

    together(ask, THREADS)
    assert shared.failures == 0 and len(got) == THREADS * len(ids)
    assert [i for i, answer in got if answer != expected[i]] == []
    stored = Counter((lab.item_id, lab.annotator, lab.attribute) for i in ids
                     for lab in shared.store.item_labels(i) if is_model(lab.annotator))
    assert len(stored) == len(ids) * len(shared.attributes) and set(stored.values()) == {1}
