"""The shipped hand labels are what data/labels/README.md says, and the linear probe scores what it should."""

import numpy as np
import pytest

from benchmark.probe import ATTRIBUTES, DEFAULT_LABELS, format_table, load_hand_labels, probe
from fedmtl.errors import FedMTLError
from generation.zoo import ZOO


def test_shipped_hand_labels_follow_their_readme():
    rows = load_hand_labels(DEFAULT_LABELS)
    assert [r["seed"] for r in rows] == list(range(340))
    assert all(r["sample_id"] == f"seed{r['seed']:07d}" for r in rows)
    assert {r["network"] for r in rows} == {"digiface-dcgan"}
    assert {r["network_sha256"] for r in rows} == {ZOO["digiface-dcgan"].member_sha256}
    assert all(set(r["labels"]) == set(ATTRIBUTES) and set(r["labels"].values()) <= {-1, 0, 1} for r in rows)
    assert all(r["split"] == ("tune" if r["seed"] < 100 else "report") for r in rows)
    assert {r["annotator"] for r in rows} == {"helper-faceset"}


def test_probe_scores_a_separable_feature_high_a_noise_feature_near_chance_and_skips_one_class():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 60 + [-1] * 10)
    signal = (y[:, None] * 2.0 + rng.normal(0, 0.3, (len(y), 3))).astype(np.float32)
    noise = rng.normal(0, 1, (len(y), 3)).astype(np.float32)
    assert probe(signal, y) > 0.95
    assert probe(noise, y) < 0.7
    assert probe(signal, np.where(y == 1, 1, -1)) is None  # only one class labelled
    table = format_table({"signal": {"gender": 0.97, "age_group": None}}, {"gender": y, "age_group": y},
                         {"signal": 3})
    assert "| majority class | - | 50.0 (n=120, 50% class 1) |" in table and "| signal | 3 | 97.0 |" in table


def test_a_broken_hand_label_file_is_one_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_id": "seed0000000"}\n')
    with pytest.raises(FedMTLError, match="row 1 lacks sample_id or labels"):
        load_hand_labels(bad)


def test_weights_apply_after_z_scoring_so_a_down_weighted_signal_costs_the_penalty():
    rng = np.random.default_rng(1)
    y = np.array([0, 1] * 60)
    signal = y[:, None] * 2.0 + rng.normal(0, 0.3, (len(y), 2))
    noise = rng.normal(0, 1, (len(y), 6))
    x = np.hstack([signal, noise]).astype(np.float32)
    even = np.ones(8)
    muted = np.array([1e-4, 1e-4, *[1.0] * 6])  # z-scoring first would undo this; applied after, it silences
    assert probe(x, y, weights=even) > 0.95
    assert probe(x, y, weights=muted) < 0.75
    with pytest.raises(FedMTLError, match="weights for 8 feature columns"):
        probe(x, y, weights=np.ones(3))


def test_the_equal_parts_candidate_is_probed_with_the_suites_part_weights():
    from benchmark.face_parts import part_weights
    from benchmark.probe import EQUAL_PARTS, candidate_weights

    assert np.array_equal(candidate_weights(EQUAL_PARTS), part_weights())
    assert candidate_weights("CydralDlib (all parts)") is None
