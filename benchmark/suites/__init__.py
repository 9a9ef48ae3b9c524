"""The suites: every module in this package that defines ``SUITE`` (a :class:`benchmark.suite.Suite`) is one.

A new suite is one new module here; ``python -m benchmark --suite NAME`` finds it by its ``SUITE.name``. Only
modules of this package are ever imported: a name on the command line picks among them, never a path.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from fedmtl.errors import ConfigError

__all__ = ["DEFAULT_SUITE", "suite_names", "get_suite", "all_suites"]

DEFAULT_SUITE = "har"
_FIRST = ("har", "faces")  # the paper's order; any other suite follows by module name


def _modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return [n for n in _FIRST if n in found] + sorted(n for n in found if n not in _FIRST)


def all_suites() -> dict[str, Any]:
    """Every suite by name, in display order."""
    out: dict[str, Any] = {}
    for module in _modules():
        suite = getattr(importlib.import_module(f"{__name__}.{module}"), "SUITE", None)
        if suite is not None:
            out[suite.name] = suite
    return out


def suite_names() -> list[str]:
    return list(all_suites())


def get_suite(name: str) -> Any:
    """The suite called ``name``; an unknown name is one error naming the known ones."""
    suites = all_suites()
    if name not in suites:
        raise ConfigError(f"suite {name!r} is unknown (known: {', '.join(suites)})")
    return suites[name]
