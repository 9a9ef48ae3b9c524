"""The shared allow-list unpickler: only the stand-ins it is given, and BUILD on them is refused."""

from __future__ import annotations

import io
import pickle

import pytest

from fedmtl.inert import AllowListUnpickler, InertStateError, inert_globals
from tests.conftest import build_on_global


def _double(x: int) -> int:
    return 2 * x


class _Tiny(AllowListUnpickler):
    allowed = inert_globals({("somewhere", "double"): _double, ("builtins", "set"): set})


def test_allowed_globals_resolve_to_their_stand_ins() -> None:
    data = b"\x80\x02csomewhere\ndouble\nK\x15\x85R."  # double(21)
    assert _Tiny(io.BytesIO(data), "tiny.pkl").load() == 42


def test_anything_else_is_refused_by_name_before_import() -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"tiny.pkl: refused: .* global os.system, which is not on"):
        _Tiny(io.BytesIO(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R."), "tiny.pkl").load()
    with pytest.raises(pickle.UnpicklingError, match="persistent ids"):
        _Tiny(io.BytesIO(b"\x80\x02X\x01\x00\x00\x00aQ."), "tiny.pkl").load()


def test_build_on_an_allowed_function_changes_nothing() -> None:
    data = build_on_global("somewhere", "double", {"__defaults__": (1,)})
    with pytest.raises(InertStateError, match="somewhere.double"):
        _Tiny(io.BytesIO(data), "tiny.pkl").load()
    assert _double.__defaults__ is None
