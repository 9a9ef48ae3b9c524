"""What an allow-listed global resolves to in the restricted unpicklers: stand-ins that take no state.

A pickle may apply BUILD (``__setstate__``, or a ``__dict__`` and slot update) to any object on its stack,
including a global it has just looked up. Had the unpicklers handed out their real module functions, a 60-byte
file could set, say, a stand-in's ``__defaults__`` for the whole process. They hand out these instead:
:class:`InertCallable` calls the stand-in and refuses every attempt to set state on itself, and classes built
with the :class:`InertType` metaclass refuse attribute writes on the class object. Used by
``benchmark.datasets.hapt_pickle`` and ``generation.ada_pickle`` (a neutral home: neither package imports the
other).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from typing import IO, Any, NoReturn

__all__ = ["AllowListUnpickler", "InertCallable", "InertStateError", "InertType", "inert_globals"]


class InertStateError(pickle.UnpicklingError):
    """A pickle tried to set state on an allow-listed global (BUILD, attribute write)."""


def _refuse(label: str) -> NoReturn:
    raise InertStateError(f"the pickle sets state on the allowed global {label}")


class InertCallable:
    """Calls ``function``; has no ``__dict__``, and refuses ``__setstate__`` and attribute writes."""

    __slots__ = ("_function", "_label")

    def __init__(self, function: Callable[..., Any], label: str) -> None:
        object.__setattr__(self, "_function", function)
        object.__setattr__(self, "_label", label)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(*args, **kwargs)

    def __setstate__(self, state: Any) -> NoReturn:
        _refuse(self._label)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        _refuse(self._label)

    def __delattr__(self, name: str) -> NoReturn:
        _refuse(self._label)

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"the stand-in for {self._label} cannot be pickled")

    def __repr__(self) -> str:
        return f"<inert stand-in for {self._label}>"


class InertType(type):
    """Metaclass of stand-in classes: the class object takes no attribute writes (BUILD's slot-state path)."""

    def __setattr__(cls, name: str, value: Any) -> NoReturn:
        _refuse(cls.__qualname__)

    def __delattr__(cls, name: str) -> NoReturn:
        _refuse(cls.__qualname__)


Global = tuple[str, str]  # (module, name) as the pickle spells it


def inert_globals(standins: Mapping[Global, Callable[..., Any] | type]) -> dict[Global, Any]:
    """What an unpickler hands out for each allowed global: functions wrapped in :class:`InertCallable`;
    classes as they are (stand-ins with the :class:`InertType` metaclass, or immutable built-in types)."""
    return {key: value if isinstance(value, type) else InertCallable(value, ".".join(key))
            for key, value in standins.items()}


class AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals of ``allowed`` (built with :func:`inert_globals`) and no persistent ids.

    Subclasses set ``allowed`` and say in :meth:`refuse` which one-line error their callers get; ``source``
    names the file in it.
    """

    allowed: Mapping[Global, Any] = {}

    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file)
        self.source = source

    def refuse(self, what: str) -> NoReturn:
        raise pickle.UnpicklingError(f"{self.source}: refused: {what}")

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            self.refuse(f"the pickle asks for global {module}.{name}, which is not on the allow-list (nothing "
                        "from the file was run)")

    def persistent_load(self, pid: Any) -> NoReturn:
        self.refuse("the pickle uses persistent ids, which are not allowed")
