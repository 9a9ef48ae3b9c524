"""Every TrainConfig field is type- and range-checked when the config is built, from Python, TOML and JSON alike.

A bad value must be one ConfigError line naming the field (and the file it came from), never a traceback later
in training and never a run that silently goes on with it.
"""

from __future__ import annotations

import json
import math

import pytest

from fedmtl import ConfigError, TrainConfig, load_config

NOT_INTS = [0, -1, 1.5, 2.0, "3", True, None, [1], float("nan")]
BAD: dict[str, list] = {
    "rounds": NOT_INTS,
    "local_epochs": NOT_INTS,
    "batch_size": NOT_INTS,
    "eval_every": NOT_INTS,
    "lr": [0, 0.0, -0.1, "0.1", True, None, [0.1], float("nan"), float("inf")],
    "momentum": [-0.1, 1, 1.0, 1.5, "0.9", True, None, float("nan")],
    "clients_per_task": [0, -1, 1.5, "some", "ALL", True, None, [2]],
    "aggregators": ["fedavg", ["fedavg"], 3, None, {"common": 3}, {"common": {"lr": 0.1}},
                    {"common": {"name": 3}}, {"everyone": {"name": "fedavg"}}, {"common": {"name": "fedmagic"}},
                    {"common": {"name": "fedadam", "lr": "x"}}, {"common": {"name": "fedadam", "lr": -1}},
                    {"common": {"name": "fedprox", "mu2": 1}}, {"common": ["fedavg"]}],
    "phases": ["personal", 3, None, [3], ["personal"], [{"epochs": 0, "layers": ["personal"]}],
               [{"epochs": 1.5, "layers": ["personal"]}], [{"epochs": "x", "layers": ["personal"]}],
               [{"epochs": True, "layers": ["personal"]}], [{"epochs": 1, "layers": "personal"}],
               [{"epochs": 1, "layers": []}], [{"epochs": 1, "layers": ["pretrained"]}],
               [{"epochs": 1, "layers": ["head"]}], [{"epochs": 1, "layers": [3]}], [{"epochs": 1}],
               [{"epochs": 1, "layers": ["personal"], "lr": 0.1}]],
    "loss": ["hinge", 3, None, ["bce"]],
    "backend": ["warp", 3, None, ["auto"]],
    "keep_optimizer_state": [1, 0, "yes", "true", None],
    "ditto_lambda": [-0.1, "x", True, None, float("nan"), float("inf")],
    "seed": ["x", "1", -1, 1.5, 1.0, True, None, 2**64, [0]],
    "threads": [0, -1, 1.5, "2", True, [1]],
    "device": ["gpu", "CPU", "cuda:", "cuda:-1", "cuda:x", "cuda:1:2", " cpu", "", 3, None, ["cpu"]],
    "memory_budget": [0, -1, 1.5, "1GB", True, [1], float("inf")],
}
CASES = [pytest.param(field, value, id=f"{field}={value!r}") for field, values in BAD.items() for value in values]


def _toml(value) -> str | None:
    """``value`` as a TOML value, or None when TOML cannot express it (None)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        items = [_toml(v) for v in value]
        return None if None in items else "[" + ", ".join(items) + "]"
    items = {k: _toml(v) for k, v in value.items()}
    return None if None in items.values() else "{" + ", ".join(f"{k} = {v}" for k, v in items.items()) + "}"


@pytest.mark.parametrize("field, value", CASES)
def test_bad_values_from_python_are_one_line_errors(field, value):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    message = str(info.value)
    assert "\n" not in message and field in message, message


@pytest.mark.parametrize("field, value", CASES)
def test_bad_values_from_toml_are_one_line_errors_naming_the_file(tmp_path, field, value):
    text = _toml(value)
    if text is None:
        return  # TOML has no null: None cannot come from a file
    path = tmp_path / "bad.toml"
    path.write_text(f"{field} = {text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and field in message and "bad.toml" in message, message


@pytest.mark.parametrize("field, value", CASES)
def test_bad_values_from_json_are_one_line_errors_naming_the_origin(field, value):
    data = json.loads(json.dumps({field: value}))  # the Flower run config's train-config path
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(data, origin="run config train-config")
    message = str(info.value)
    assert "\n" not in message and field in message and "train-config" in message, message


def test_replace_is_checked_too():
    with pytest.raises(ConfigError, match="seed"):
        TrainConfig().replace(seed="x")


@pytest.mark.parametrize("changes", [
    {"device": "auto"}, {"device": "cpu"}, {"device": "cuda"}, {"device": "cuda:0"}, {"device": "cuda:12"},
    {"memory_budget": None}, {"memory_budget": 1 << 30}, {"lr": 1}, {"momentum": 0}, {"seed": 2**63},
    {"threads": None}, {"clients_per_task": "all"}, {"clients_per_task": 3}, {"ditto_lambda": 0},
    {"aggregators": {"common": "fedadam"}}, {"phases": [{"epochs": 2, "layers": ["personal"]}]},
    {"backend": "loop"}, {"keep_optimizer_state": True},
])
def test_good_values_are_accepted(changes):
    cfg = TrainConfig(**changes)
    for key, value in changes.items():
        if key not in ("aggregators", "phases"):
            assert getattr(cfg, key) == value


def test_new_fields_have_defaults_and_round_trip(tmp_path):
    cfg = TrainConfig()
    assert cfg.device == "cpu" and cfg.memory_budget is None
    path = tmp_path / "run.toml"
    path.write_text('device = "cuda:1"\nmemory_budget = 2000000000\n')
    loaded = load_config(path)
    assert (loaded.device, loaded.memory_budget) == ("cuda:1", 2_000_000_000)
    assert TrainConfig.from_dict(json.loads(json.dumps(loaded.to_dict()))) == loaded


def test_numpy_integers_are_integers_and_stored_as_python_ints():
    import numpy as np

    cfg = TrainConfig(rounds=np.int64(3), seed=np.int32(7), clients_per_task=np.int64(2), threads=np.int8(1),
                      memory_budget=np.int64(1 << 20))
    assert (cfg.rounds, cfg.seed, cfg.clients_per_task, cfg.threads, cfg.memory_budget) == (3, 7, 2, 1, 1 << 20)
    assert all(type(v) is int for v in (cfg.rounds, cfg.seed, cfg.clients_per_task, cfg.threads, cfg.memory_budget))
    json.dumps(cfg.to_dict())  # what the Flower run config and the leaderboards carry
