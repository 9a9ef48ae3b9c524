import pytest

from fedmtl.files import atomic_write


def test_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "board.json"
    atomic_write(target, b"old")
    atomic_write(target, b"new", durable=True)
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["board.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "board.json"
    atomic_write(target, b"previous")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["board.json"]
