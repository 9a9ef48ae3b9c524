"""The prepared face, from many threads at once: the app's request and prefetch threads share dlib's models."""

from __future__ import annotations

from pathlib import Path

from labeling.fixtures import make_faces
from labeling.sources.faceview import FaceView, view_face

THREADS = 4
PASSES = 3


def _answer(face: FaceView) -> tuple:
    """Everything the detector decides: whether it found the face, and the landmarks placed in its box."""
    shape5 = tuple((p.x, p.y) for p in face.shape5.parts())
    return face.found, shape5, face.points68.tobytes()


def test_threads_preparing_faces_at_once_get_what_one_thread_gets(tmp_path: Path, together) -> None:
    """Issue 11's dropped first connection: the shared detector run by two threads at once gave wrong boxes and
    sometimes SIGSEGV. Each thread here prepares all faces several times, starting together, in different orders."""
    paths = [tmp_path / r["file"] for r in make_faces(tmp_path, 20)]
    alone = [_answer(view_face(p)) for p in paths]
    assert 0 < sum(found for found, _, _ in alone) < len(paths)  # both the detector's boxes and the fixed box
    wrong: list[str] = []

    def prepare(k: int) -> None:
        for n in range(PASSES * len(paths)):
            i = (k * 7 + n * (k + 1)) % len(paths)
            if _answer(view_face(paths[i])) != alone[i]:
                wrong.append(paths[i].name)

    together(prepare, THREADS)
    assert not wrong, f"{len(wrong)} of {THREADS * PASSES * len(paths)} faces prepared differently in threads"
