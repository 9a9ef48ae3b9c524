"""Read pandas-pickled DataFrames as plain numpy columns, without pandas and without running foreign code.

The HAPT recordings ship as a gzip'd pickle written by pandas ~1.0 (protocol 2). Modern pandas cannot load
it, pandas is not a dependency, and a plain ``pickle.load`` would execute whatever globals the file names.
So :class:`RestrictedUnpickler` resolves globals from an explicit allow-list, mapping every pandas/numpy
name to a small inert stand-in that only records its state; the column names and numeric blocks are then
pulled out of those stand-ins. Any other global (``os.system``, ``builtins.eval``...) is refused with a
:class:`~fedmtl.errors.DatasetError` naming the file and the global.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import zlib
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from fedmtl.errors import DatasetError
from fedmtl.inert import AllowListUnpickler, InertStateError, InertType, inert_globals

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "Table", "frames_to_tables", "load_pickle_gz",
           "load_hapt_tables"]

Table = dict[str, np.ndarray]
"""One DataFrame as an ordered ``column name -> 1-D array`` mapping (all columns the same length)."""

# numpy dtype strings a numeric block may carry; anything else (notably object arrays with bytes) is refused.
_NUMERIC_DTYPES = frozenset({"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"})
_BYTE_ORDERS = frozenset({"<", ">", "|", "="})


class _Refused(Exception):
    """A stand-in was handed state it does not accept (wrong type, dtype, size...)."""


class _Stub(metaclass=InertType):
    """Base of the inert stand-ins: instances only remember the state pickle hands them."""

    args: tuple[Any, ...] = ()
    state: Any = None  # class-level default: NEWOBJ creates instances without calling __init__

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _FrameStub(_Stub):
    """Stands in for ``pandas.core.frame.DataFrame``; state is a dict with ``_data`` (the block manager)."""


class _BlockManagerStub(_Stub):
    """Stands in for ``pandas.core.internals.managers.BlockManager``."""


class _IndexStub(_Stub):
    """Stands in for ``pandas.core.indexes.base.Index`` (column labels)."""


class _RangeIndexStub(_IndexStub):
    """Stands in for ``pandas.core.indexes.range.RangeIndex`` (row labels)."""


class _IndexValue:
    """What ``_new_Index(cls, d)`` returns: the index class and its recorded constructor dict."""

    def __init__(self, cls: type, d: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, _IndexStub)) or not isinstance(d, dict):
            raise _Refused("_new_Index called with an unexpected class or state")
        self.cls = cls
        self.d = d


class _DtypeStub(metaclass=InertType):
    """Stands in for ``numpy.dtype``: validates the type string against a numeric allow-list."""

    def __init__(self, spec: Any, align: Any = 0, copy: Any = 1) -> None:
        if not isinstance(spec, str) or (spec not in _NUMERIC_DTYPES and spec != "O8"):
            raise _Refused(f"dtype {spec!r} is not an allowed numeric dtype")
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in _BYTE_ORDERS:
            raise _Refused("dtype state is malformed")
        self.byteorder = state[1]

    @property
    def is_object(self) -> bool:
        return self.spec == "O8"

    def to_numpy(self) -> np.dtype:
        order = self.byteorder if self.byteorder in ("<", ">") else "="
        return np.dtype(order + self.spec)


class _ArrayStub(metaclass=InertType):
    """Stands in for ``numpy.ndarray`` as rebuilt by ``numpy.core.multiarray._reconstruct``.

    Numeric state becomes a real (copied, owned) numpy array via ``frombuffer``; object state is kept only
    when it is a flat list of strings (pandas column labels).
    """

    def __init__(self) -> None:
        self.value: np.ndarray | list[str] | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("ndarray state is not a 5-tuple")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise _Refused("ndarray shape is malformed")
        if not isinstance(dtype, _DtypeStub):
            raise _Refused("ndarray dtype is not a numpy dtype")
        count = math.prod(shape)
        if dtype.is_object:
            if not isinstance(raw, list) or len(raw) != count or not all(isinstance(v, str) for v in raw):
                raise _Refused("object ndarray holds something other than strings")
            self.value = list(raw)
            return
        if not isinstance(raw, bytes):
            raise _Refused("numeric ndarray data is not bytes")
        np_dtype = dtype.to_numpy()
        if len(raw) != count * np_dtype.itemsize:
            raise _Refused(
                f"ndarray data has {len(raw)} bytes, expected {count * np_dtype.itemsize} for shape {shape}"
            )
        flat = np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="), copy=True)
        self.value = flat.reshape(shape, order="F" if fortran else "C")


def _np_reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStub:
    """Stand-in for ``numpy.core.multiarray._reconstruct``: an empty array awaiting ``BUILD``."""
    if cls is not _ArrayStub:
        raise _Refused("_reconstruct called for something other than ndarray")
    return _ArrayStub()


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> _Stub:
    """Stand-in for ``copyreg._reconstructor``: only instantiates our own stubs, from plain ``object``."""
    if not (isinstance(cls, type) and issubclass(cls, _Stub)) or base is not object or state is not None:
        raise _Refused("_reconstructor called for a class outside the allow-list")
    return cls()


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode`` as protocol 2 uses it to carry bytes: latin-1 strings only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode used other than for latin-1 bytes")
    return text.encode("latin-1")


def _new_index(cls: Any, d: Any) -> _IndexValue:
    """Stand-in for ``pandas.core.indexes.base._new_Index``."""
    return _IndexValue(cls, d)


def _slice(*args: Any) -> slice:
    if not all(a is None or isinstance(a, int) for a in args):
        raise _Refused("slice bounds are not integers")
    return slice(*args)


# (module, name) -> replacement. Python-2 spellings appear because protocol-2 pickles written by Python 3
# record them; an overridden find_class receives the names as written. Functions are handed out wrapped
# (InertCallable) and the stub classes are InertType, so BUILD on a looked-up global changes nothing;
# ``object`` is immutable.
_STANDINS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("copy_reg", "_reconstructor"): _copyreg_reconstructor,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "slice"): _slice,
    ("builtins", "slice"): _slice,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): _ArrayStub,
    ("numpy", "dtype"): _DtypeStub,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("pandas.core.frame", "DataFrame"): _FrameStub,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManagerStub,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _IndexStub,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndexStub,
}
_ALLOWED = inert_globals(_STANDINS)
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_ALLOWED)
"""The (module, name) globals a HAPT pickle may name; each resolves to an inert stand-in."""


class RestrictedUnpickler(AllowListUnpickler):
    """An unpickler that resolves only allow-listed globals, each to an inert stand-in.

    ``source`` names the file in error messages.
    """

    allowed = _ALLOWED

    def refuse(self, what: str) -> NoReturn:
        raise DatasetError(f"{self.source}: {what}")


def load_pickle_gz(path: str | os.PathLike[str]) -> Any:
    """Unpickle a gzip'd pickle with :class:`RestrictedUnpickler`; any failure is a one-line DatasetError."""
    source = os.fspath(path)
    try:
        with gzip.open(source, "rb") as fh:
            return RestrictedUnpickler(fh, source).load()
    except DatasetError:
        raise
    except (_Refused, InertStateError) as exc:
        raise DatasetError(f"{source}: pickle content refused ({exc})") from None
    except FileNotFoundError:
        raise DatasetError(f"{source}: file not found") from None
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, RecursionError) as exc:
        raise DatasetError(
            f"{source}: not a readable gzip'd pickle ({exc.__class__.__name__}: {exc})"
        ) from None
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise DatasetError(f"{source}: malformed pickle ({exc.__class__.__name__}: {exc})") from None


def _frame_to_table(frame: _FrameStub, where: str) -> Table:
    """Pull ordered columns out of a DataFrame stand-in (BlockManager state, pandas >= 0.14 layout)."""
    state = frame.state
    if not isinstance(state, dict) or not isinstance(state.get("_data"), _BlockManagerStub):
        raise DatasetError(f"{where}: DataFrame has no block manager")
    mgr_state = state["_data"].state
    if not isinstance(mgr_state, tuple) or len(mgr_state) < 4 or not isinstance(mgr_state[3], dict):
        raise DatasetError(f"{where}: block manager state has an unknown layout")
    layout = mgr_state[3].get("0.14.1")
    if not isinstance(layout, dict) or not isinstance(layout.get("axes"), list) or len(layout["axes"]) != 2:
        raise DatasetError(f"{where}: block manager state has no 0.14.1 axes/blocks")
    col_axis = layout["axes"][0]
    if not isinstance(col_axis, _IndexValue) or not isinstance(col_axis.d.get("data"), _ArrayStub):
        raise DatasetError(f"{where}: column index is malformed")
    names = col_axis.d["data"].value
    if not isinstance(names, list):
        raise DatasetError(f"{where}: column labels are not strings")
    columns: list[np.ndarray | None] = [None] * len(names)
    for block in layout.get("blocks", []):
        values = block.get("values") if isinstance(block, dict) else None
        locs = block.get("mgr_locs") if isinstance(block, dict) else None
        if not isinstance(values, _ArrayStub) or not isinstance(values.value, np.ndarray):
            raise DatasetError(f"{where}: a data block is not a numeric array")
        arr = values.value
        if isinstance(locs, slice):
            idx = list(range(len(names)))[locs]
        elif isinstance(locs, _ArrayStub) and isinstance(locs.value, np.ndarray):
            idx = [int(i) for i in locs.value.ravel()]
        else:
            raise DatasetError(f"{where}: a data block has no column locations")
        if arr.ndim != 2 or arr.shape[0] != len(idx) or any(not 0 <= i < len(names) for i in idx):
            raise DatasetError(f"{where}: a data block's shape does not match its columns")
        for row, i in enumerate(idx):
            columns[i] = arr[row]
    if any(c is None for c in columns):
        raise DatasetError(f"{where}: some columns have no data block")
    lengths = {len(c) for c in columns if c is not None}
    if len(lengths) > 1:
        raise DatasetError(f"{where}: columns differ in length")
    return {name: col for name, col in zip(names, columns, strict=True) if col is not None}


def frames_to_tables(obj: Any, source: str) -> dict[int, list[Table]]:
    """Convert an unpickled ``dict[int, list[DataFrame stand-in]]`` into ``dict[int, list[Table]]``."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{source}: expected a dict of subject -> DataFrames, got {type(obj).__name__}")
    out: dict[int, list[Table]] = {}
    for key, frames in obj.items():
        if not isinstance(key, int) or not isinstance(frames, list):
            raise DatasetError(f"{source}: entry {key!r} is not an int subject with a list of DataFrames")
        tables = []
        for i, frame in enumerate(frames):
            if not isinstance(frame, _FrameStub):
                raise DatasetError(f"{source}: subject {key} item {i} is not a DataFrame")
            tables.append(_frame_to_table(frame, f"{source}: subject {key} recording {i}"))
        out[key] = tables
    return out


def load_hapt_tables(path: str | os.PathLike[str]) -> dict[int, list[Table]]:
    """Load the KCC2020 ``HAPT.pkl.gz``: subject id -> list of recordings, each a column table."""
    return frames_to_tables(load_pickle_gz(path), os.fspath(path))
