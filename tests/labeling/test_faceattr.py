"""The face-attribute sources: the lip-pixel group that teeth are read from, and the shipped classifiers' inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labeling.autolabel import source_names
from labeling.fixtures import make_faces
from labeling.sources.faceattr import (
    FEATURE_GROUPS,
    classifier_probability,
    cue_scores,
    descriptor_memo_info,
    face_descriptor,
    face_features,
    mouth_stats,
    tuned,
)
from labeling.sources.faceview import FaceView, view_face


def _drawn(mouth_rgb: tuple[int, int, int]) -> FaceView:
    """A 256 px face of skin colour whose inner lips (a 40 x 16 px box) hold ``mouth_rgb``; lips are red."""
    rgb = np.zeros((256, 256, 3), dtype=np.uint8)
    rgb[:] = (200, 150, 120)
    points = np.zeros((68, 2))
    points[0:17, 0] = np.linspace(40, 216, 17)  # a jaw line whose polygon covers the face
    points[0:17, 1] = 250 - 120 * np.abs(np.linspace(-1, 1, 17)) ** 2
    points[0:17][[0, -1], 1] = 40
    outer = [(100, 180), (110, 172), (128, 170), (146, 172), (156, 180), (150, 190), (140, 198), (128, 200),
             (116, 198), (106, 190), (103, 185), (153, 185)]
    points[48:60] = outer
    inner = [(108, 176), (128, 174), (148, 176), (150, 184), (148, 192), (128, 194), (108, 192), (106, 184)]
    points[60:68] = inner
    rgb[165:205, 95:160] = (150, 40, 50)  # lips
    rgb[176:192, 108:148] = mouth_rgb  # what the inner lips show
    return FaceView(rgb, True, None, points)


def test_mouth_stats_tell_white_teeth_from_a_dark_open_mouth():
    teeth = mouth_stats(_drawn((240, 240, 235)))
    dark = mouth_stats(_drawn((25, 10, 12)))
    assert teeth.shape == dark.shape == (14,)
    # inner lips: brightness vs the face, tooth-like shares (two strictnesses), dark share
    assert teeth[0] > 1.0 > 0.3 > dark[0]
    assert teeth[3] > 0.6 and teeth[4] > 0.6 and dark[3] == dark[4] == 0.0
    assert dark[5] > 0.6 and teeth[5] == 0.0
    assert teeth[2] < 0.2 < dark[2]  # grey-white teeth are unsaturated
    assert teeth[6] == pytest.approx(dark[6]) and teeth[6] > 0  # the same lips, the same area
    assert np.array_equal(face_features(_drawn((240, 240, 235)), ("mouth",))["mouth"], teeth)


def _points(nose_x: float) -> np.ndarray:
    """68 landmarks: eyes 56 px apart at y=100, nose tip at ``nose_x``, inner lips a box around (128, 180)."""
    points = np.zeros((68, 2))
    points[36:42] = (100, 100)
    points[42:48] = (156, 100)
    points[30] = (nose_x, 140)
    points[60:68] = [(110, 175), (128, 172), (146, 175), (150, 180), (146, 186), (128, 189), (110, 186), (106, 180)]
    return points


def test_cues_read_pose_and_teeth_from_landmark_geometry() -> None:
    dark = np.full((256, 256, 3), 60, dtype=np.uint8)
    white = dark.copy()
    white[170:192, 100:156] = (235, 235, 230)
    dark[170:192, 100:156] = (110, 30, 40)  # lips and mouth cavity: red
    front, teeth, _ = cue_scores(FaceView(white, True, None, _points(128)))
    side, no_teeth, _ = cue_scores(FaceView(dark, True, None, _points(128 + 25)))
    assert front == pytest.approx(0.0) and side == pytest.approx(25 / 56)
    assert teeth > 0.95 and no_teeth == 0.0


def test_prepared_drawn_faces_show_their_teeth(tmp_path: Path) -> None:
    """Detection (or the fixed box) and both landmark sets on the fixture faces, read through the teeth cue."""
    for record in make_faces(tmp_path, 12):
        whiteness = cue_scores(view_face(tmp_path / record["file"]))[1]
        assert int(whiteness >= 0.15) == record["truth"]["teeth"], record


def test_every_shipped_classifier_reads_groups_that_exist_with_the_widths_it_was_fitted_on(tmp_path: Path):
    make_faces(tmp_path, 1)
    face = view_face(tmp_path / "seed0000000.png")
    features = face_features(face)
    assert set(features) == set(FEATURE_GROUPS)
    specs = {name: spec for name, spec in tuned()["attributes"].items() if "groups" in spec}
    assert set(specs) == {"glasses", "pose", "teeth"}
    for name, spec in specs.items():
        width = sum(len(features[g]) for g in spec["groups"])
        assert len(spec["coef"]) == len(spec["mean"]) == len(spec["scale"]) == width, name
        assert 0.0 <= classifier_probability(spec, features) <= 1.0
    # teeth reads the lips' pixels, and the refit changed the annotator's name (provenance stays exact)
    assert "mouth" in specs["teeth"]["groups"]
    assert source_names()["teeth"] == f"model:faceattr@{tuned()['version']}" != "model:faceattr@1"


def test_the_descriptor_is_computed_once_per_face_and_never_reused_for_other_pixels(tmp_path: Path):
    make_faces(tmp_path, 2)
    first = view_face(tmp_path / "seed0000000.png")
    value = face_descriptor(first)  # computed here, or by an earlier test that drew the same face
    before = descriptor_memo_info()
    again = face_descriptor(view_face(tmp_path / "seed0000000.png"))  # prepared anew from the same file
    after = descriptor_memo_info()
    assert value.shape == (128,) and np.array_equal(value, again)
    assert (after.misses - before.misses, after.hits - before.hits) == (0, 1)
    value[:] = 0  # a caller's copy: the memo keeps its own
    assert np.array_equal(face_descriptor(first), again)
    changed = FaceView(first.rgb.copy(), first.found, first.shape5, first.points68)
    changed.rgb[128:140, 100:156] = 255  # other pixels, same landmarks: computed, not looked up
    misses = descriptor_memo_info().misses
    other = face_descriptor(changed)
    assert descriptor_memo_info().misses == misses + 1 and not np.array_equal(other, again)
    assert np.array_equal(face_features(first, ("embedding",))["embedding"], again)  # the group reads the memo
