import pytest

from fedmtl import ConfigError, Phase, TrainConfig, load_config


def test_toml_round_trip_with_aggregators_and_phases(tmp_path):
    path = tmp_path / "fed.toml"
    path.write_text(
        'rounds = 7\nlr = 0.2\nclients_per_task = 3\n'
        '[aggregators.common]\nname = "fedadam"\nlr = 0.05\n'
        '[[phases]]\nepochs = 2\nlayers = ["personal"]\n'
    )
    cfg = load_config(path)
    assert cfg.rounds == 7 and cfg.lr == 0.2 and cfg.clients_per_task == 3
    assert cfg.aggregators["common"] == {"name": "fedadam", "lr": 0.05}
    assert cfg.aggregators["task"] == {"name": "fedavg"}
    assert cfg.phases == (Phase(2, ("personal",)),)
    assert cfg.make_aggregator("common").name == "fedadam"


def test_file_keys_override_a_base(tmp_path):
    path = tmp_path / "fed.toml"
    path.write_text("rounds = 2\n")
    cfg = load_config(path, base=TrainConfig(lr=0.3, rounds=50))
    assert (cfg.rounds, cfg.lr) == (2, 0.3)


@pytest.mark.parametrize("text, message", [
    ("roundz = 3\n", "unknown key 'roundz'"),
    ("rounds = 0\n", "rounds must be a positive integer"),
    ('clients_per_task = "some"\n', "clients_per_task"),
    ('[aggregators.common]\nname = "fedmagic"\n', "fedmagic"),
    ('[aggregators.common]\nname = "fedprox"\nmu2 = 1\n', "mu2"),
    ('[aggregators.everyone]\nname = "fedavg"\n', "everyone"),
    ('loss = "hinge"\n', "hinge"),
    ("rounds = [\n", "not valid TOML"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/fed.toml")
