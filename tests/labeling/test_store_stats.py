"""The store's contract (used by other packages), agreement measures against published values, stats output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from labeling import (
    LabelingError,
    LabelStore,
    cohen_kappa,
    compute_stats,
    fleiss_kappa,
    krippendorff_alpha,
    majority,
)
from labeling.cli import main


def test_store_contract_latest_undo_and_history(tmp_path: Path) -> None:
    store = LabelStore(tmp_path / "db.sqlite")
    assert store.add_items(["a1", "a2", "a3"]) == 3 and store.add_items(["a2", "a3", "a4"]) == 1
    assert store.items() == ["a1", "a2", "a3", "a4"]
    first = store.save("a1", "ann", {"gender": 1, "pose": 0})
    store.save("a1", "ann", {"pose": 1})
    store.save("a2", "bob", {"teeth": "showing"})
    current = {(label.item_id, label.annotator, label.attribute): label.value for label in store.labels()}
    assert current == {("a1", "ann", "gender"): 1, ("a1", "ann", "pose"): 1, ("a2", "bob", "teeth"): 1}
    assert store.undo("ann") == ["a1"]
    assert store.current("a1", "ann") == {"gender": 1, "pose": 0}  # the earlier value is back
    assert store.undo("ann") == ["a1"] and store.current("a1", "ann") == {}
    assert store.undo("ann") == []
    assert [row[1] for row in store.history()][:2] == [first, first]  # history kept, flagged undone
    assert len(store.history()) == 4 and sum(row[-1] for row in store.history()) == 3
    with pytest.raises(LabelingError, match="unknown item"):
        store.save("zz", "ann", {"gender": 1})
    assert len(store.history()) == 4  # nothing partial


def test_progress_resume_skip_flag(tmp_path: Path) -> None:
    store = LabelStore(tmp_path / "db.sqlite")
    store.add_items([f"i{k}" for k in range(5)])
    full = {"gender": 0, "age_group": 1, "glasses": 0, "pose": 1, "teeth": 0}
    store.save("i0", "ann", full)
    store.save("i1", "ann", {"gender": 1})  # partial: not done
    store.mark("i2", "ann", "skip")
    store.mark("i3", "ann", "flag")
    store.save("i4", "bob", full)
    assert store.next_items("ann", limit=5) == ["i1", "i4"]
    assert store.progress("ann").__dict__ == {"mine": 1, "everyone": 2, "total": 5}
    assert store.marked(kind="flag") == {"i3"}
    store.undo("ann")  # the flag
    assert store.next_items("ann", limit=5) == ["i1", "i3", "i4"]
    assert store.next_items("ann", order=["i4", "i3", "i1"], limit=1) == ["i4"]


def test_cohen_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 60)
    b = np.where(rng.random(60) < 0.8, a, 1 - a)
    assert cohen_kappa(list(a), list(b)) == pytest.approx(cohen_kappa_score(a, b))
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))


def test_fleiss_wikipedia_example() -> None:
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(np.array(table)) == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_reference_example() -> None:
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability', nominal example: alpha = 0.743."""
    coders = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
              [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
              [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
              [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[c[u] for c in coders if c[u] is not None] for u in range(12)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha([[0, 0], [1, 1, 1]]) == 1.0


def test_majority() -> None:
    assert majority([1, 1, 0]) == 1 and majority([0, 1]) is None and majority([]) is None


def test_stats_three_annotators(tmp_path: Path, capsys) -> None:
    store = LabelStore(tmp_path / "db.sqlite")
    store.add_items([f"i{k}" for k in range(6)])
    votes = {"ann": [0, 0, 1, 1, 0, 1], "bob": [0, 0, 1, 1, 1, 1], "cy": [0, 1, 1, 1, 0, 0]}
    for name, values in votes.items():
        for k, v in enumerate(values):
            store.save(f"i{k}", name, {"gender": v})
    stats = compute_stats(store)
    units = [[votes[n][k] for n in votes] for k in range(6)]
    assert stats.agreement["gender"]["measure"] == "krippendorff_alpha"
    assert stats.agreement["gender"]["value"] == pytest.approx(krippendorff_alpha(units))
    assert stats.distribution["gender"] == {"male": 3, "female": 3, "cant_tell": 0, "tie": 0, "unlabelled": 0}
    assert [c[0] for c in stats.conflicts] == ["i1", "i4", "i5"]
    assert stats.annotators["bob"] == {"labels": 6, "items": 6, "complete": 0, "skipped": 0, "flagged": 0}
    assert main(["stats", "--db", str(store.path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["distribution"]["gender"]["female"] == 3 and len(printed["conflicts"]) == 3
    assert main(["stats", "--db", str(store.path)]) == 0
    text = capsys.readouterr().out
    assert "krippendorff_alpha" in text and "Items in conflict: 3" in text
