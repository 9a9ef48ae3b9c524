"""A Flower run config names its factory by a registered short name; nothing else is ever imported or called."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedmtl.errors import ConfigError
from fedmtl.flower import FlowerSetup, factory_names, load_factory


def test_a_crafted_import_path_is_refused_and_its_command_never_runs(tmp_path: Path) -> None:
    # subprocess.getoutput(dict) runs `sh -c <first key>`: the attack the issue reproduced
    sentinel = tmp_path / "pwned"
    run_config = {f"touch {sentinel}": "", "fedmtl-factory": "subprocess:getoutput"}
    with pytest.raises(ConfigError) as err:
        load_factory(run_config)
    message = str(err.value)
    assert "\n" not in message and "'subprocess:getoutput'" in message and "import paths" in message
    assert "toy" in message  # names what is registered
    assert not sentinel.exists()


def test_a_named_module_is_never_imported(tmp_path: Path, monkeypatch) -> None:
    sentinel = tmp_path / "imported"
    (tmp_path / "fedmtl_evil_factory.py").write_text(
        f"open({str(sentinel)!r}, 'w').close()\n\ndef build(cfg):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for value in ("fedmtl_evil_factory:build", "fedmtl_evil_factory", "fedmtl_evil_factory.build"):
        with pytest.raises(ConfigError, match="registered factory"):
            load_factory({"fedmtl-factory": value})
    assert not sentinel.exists()
    assert "fedmtl_evil_factory" not in sys.modules


@pytest.mark.parametrize("value", [None, "", "nope", "TOY", "toy ", 7, ["toy"], "../toy"])
def test_anything_but_a_registered_name_is_one_line(value) -> None:
    config = {} if value is None else {"fedmtl-factory": value}
    with pytest.raises(ConfigError) as err:
        load_factory(config)
    assert "\n" not in str(err.value) and "fedmtl-factory" in str(err.value)


def test_registered_names_build_setups() -> None:
    names = factory_names()
    assert "toy" in names and "har" in names  # har: the entry point pyproject.toml declares
    setup = load_factory({"fedmtl-factory": "toy", "toy-clients": 3})
    assert isinstance(setup, FlowerSetup) and len(setup.clients()) == 3


def test_har_resolves_through_its_entry_point_to_the_real_factory():
    # the pooled regime is refused by benchmark.flower_har.federation itself, before it builds any data
    with pytest.raises(ConfigError, match="pools all data"):
        load_factory({"fedmtl-factory": "har", "regime": "centralized_joint"})
