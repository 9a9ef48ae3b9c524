"""The restricted unpickler: rebuilds pandas-pickled frames without pandas and refuses everything else."""

from __future__ import annotations

import copyreg
import gzip
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from benchmark.datasets.hapt_pickle import load_hapt_tables, load_pickle_gz
from fedmtl.errors import DatasetError
from tests.conftest import build_on_global, module_state


class _Reduce:
    """Pickles as ``func(*args)`` followed by ``BUILD state``, like pandas objects do."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


@pytest.fixture
def fake_pandas(monkeypatch):
    """Just enough importable pandas names for ``pickle`` to write pandas-1.0-shaped streams."""
    names = {}
    for mod in (
        "pandas",
        "pandas.core",
        "pandas.core.frame",
        "pandas.core.internals",
        "pandas.core.internals.managers",
        "pandas.core.indexes",
        "pandas.core.indexes.base",
        "pandas.core.indexes.range",
    ):
        monkeypatch.setitem(sys.modules, mod, types.ModuleType(mod))

    def define(module, name, obj):
        obj.__module__, obj.__qualname__ = module, name
        setattr(sys.modules[module], name, obj)
        names[name] = obj

    define("pandas.core.frame", "DataFrame", type("DataFrame", (), {}))
    define("pandas.core.internals.managers", "BlockManager", type("BlockManager", (), {}))
    define("pandas.core.indexes.base", "Index", type("Index", (), {}))
    define("pandas.core.indexes.range", "RangeIndex", type("RangeIndex", (), {}))
    define("pandas.core.indexes.base", "_new_Index", lambda cls, d: None)
    return names


def _frame(pd, columns: list[str], blocks: list[tuple[np.ndarray, object]], n: int) -> _Reduce:
    col_index = _Reduce(
        pd["_new_Index"], (pd["Index"], {"data": np.array(columns, dtype=object), "name": None})
    )
    row_index = _Reduce(
        pd["_new_Index"], (pd["RangeIndex"], {"name": None, "start": 0, "stop": n, "step": 1})
    )
    layout = {"axes": [col_index, row_index], "blocks": [{"values": v, "mgr_locs": loc} for v, loc in blocks]}
    mgr = _Reduce(
        copyreg._reconstructor, (pd["BlockManager"], object, None), ([], [], [], {"0.14.1": layout})
    )
    state = {"_data": mgr, "_typ": "dataframe", "_metadata": [], "attrs": {}}
    return _Reduce(copyreg._reconstructor, (pd["DataFrame"], object, None), state)


def _write_gz(path: Path, payload: bytes) -> Path:
    with gzip.open(path, "wb") as fh:
        fh.write(payload)
    return path


def test_rebuilds_columns_from_blocks_without_pandas(fake_pandas, tmp_path: Path) -> None:
    n = 5
    floats = np.arange(2 * n, dtype="<f8").reshape(2, n) / 7
    ints = np.arange(n, dtype="<i8").reshape(1, n) - 1
    frame = _frame(fake_pandas, ["a", "label", "b"], [(floats, np.array([0, 2])), (ints, slice(1, 2, 1))], n)
    other = _frame(fake_pandas, ["x"], [(floats[:1], slice(0, 1, 1))], n)
    path = _write_gz(tmp_path / "frames.pkl.gz", pickle.dumps({1: [frame, other], 7: []}, protocol=2))
    assert b"pandas.core.frame" in gzip.decompress(path.read_bytes())
    tables = load_hapt_tables(path)
    assert sorted(tables) == [1, 7] and tables[7] == []
    first = tables[1][0]
    assert list(first) == ["a", "label", "b"]
    assert np.array_equal(first["a"], floats[0]) and np.array_equal(first["b"], floats[1])
    assert np.array_equal(first["label"], ints[0]) and first["label"].dtype == np.int64
    assert np.array_equal(tables[1][1]["x"], floats[0])


def test_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = b"\x80\x02cos\nsystem\nX" + len(f"touch {marker}").to_bytes(4, "little")
    payload += f"touch {marker}".encode() + b"\x85R."
    path = _write_gz(tmp_path / "evil.pkl.gz", payload)
    with pytest.raises(DatasetError, match=r"evil\.pkl\.gz.*os\.system"):
        load_pickle_gz(path)
    assert not marker.exists()


def test_refuses_builtins_eval_with_protocol_4(tmp_path: Path) -> None:
    path = _write_gz(tmp_path / "eval.pkl.gz", pickle.dumps(eval, protocol=4))
    with pytest.raises(DatasetError, match=r"builtins\.eval"):
        load_pickle_gz(path)


def test_refuses_object_arrays_of_non_strings(tmp_path: Path) -> None:
    path = _write_gz(tmp_path / "obj.pkl.gz", pickle.dumps(np.array([1, 2], dtype=object), protocol=2))
    with pytest.raises(DatasetError, match="malformed|not allowed|strings"):
        load_pickle_gz(path)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not gzip at all",
        gzip.compress(b"garbage, not a pickle"),
        gzip.compress(pickle.dumps([1])[:-3]),
    ],
    ids=["not-gzip", "gzip-garbage", "truncated"],
)
def test_garbage_files_are_dataset_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "HAPT.pkl.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="HAPT.pkl.gz"):
        load_hapt_tables(path)


def test_wrong_structure_and_missing_file(tmp_path: Path) -> None:
    path = _write_gz(tmp_path / "list.pkl.gz", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DatasetError, match="expected a dict"):
        load_hapt_tables(path)
    with pytest.raises(DatasetError, match="file not found"):
        load_hapt_tables(tmp_path / "absent.pkl.gz")


# ---------------------------------------------------------------- BUILD on an allowed global


STATES = [(None, {"__defaults__": ("latin1",)}), {"marker": 1, "__defaults__": ("latin1",)},
          (None, {"__setstate__": None, "state": "x"}), {"__call__": None}]


@pytest.mark.parametrize("state", STATES, ids=["slotstate", "dictstate", "setstate-slot", "call-dict"])
def test_build_on_an_allowed_global_changes_nothing(tmp_path: Path, state) -> None:
    from benchmark.datasets import hapt_pickle

    before = module_state(hapt_pickle)
    for module, name in sorted(hapt_pickle.ALLOWED_GLOBALS):
        path = _write_gz(tmp_path / f"{module}.{name}.pkl.gz", build_on_global(module, name, state))
        with pytest.raises(DatasetError) as err:
            load_pickle_gz(path)
        assert "\n" not in str(err.value) and path.name in str(err.value)
    assert module_state(hapt_pickle) == before
    # and the stand-ins still do their job: latin-1 bytes through _codecs.encode, as protocol 2 writes them
    assert load_pickle_gz(_write_gz(tmp_path / "ok.pkl.gz", pickle.dumps(b"\xff\x00", protocol=2))) == b"\xff\x00"
