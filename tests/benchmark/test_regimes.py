import pytest

from benchmark.regimes import REGIMES, get_regimes
from fedmtl import ConfigError


def test_paper_regimes_and_layer_plans():
    assert REGIMES["mtfl"].layer_types(4) == ("common", "common", "personal", "personal")
    assert REGIMES["fedavg"].layer_types(4) == ("common",) * 4
    assert REGIMES["separate"].layer_types(4) == ("personal",) * 4
    assert REGIMES["fedper"].layer_types(4) == ("common", "common", "common", "personal")
    assert REGIMES["lg_fedavg"].layer_types(4) == ("personal", "personal", "common", "common")
    assert REGIMES["centralized_joint"].pooled
    assert {r.name for r in REGIMES.values() if r.paper} == {"centralized_joint", "separate", "mtfl", "fedavg"}


def test_fedrep_alternates_head_then_body():
    phases = REGIMES["fedrep"].local_phases(5)
    assert [(p.epochs, p.layers) for p in phases] == [(5, ("personal",)), (1, ("common",))]


def test_ditto_is_a_global_model_with_personal_copies():
    ditto = REGIMES["ditto"]
    assert ditto.layer_types(4) == ("common",) * 4 and ditto.extra["ditto_lambda"] > 0


def test_unknown_regime_is_named():
    with pytest.raises(ConfigError, match="'fedmagic'"):
        get_regimes("mtfl,fedmagic")


def test_grid_survives_a_diverging_learning_rate():
    import torch

    from benchmark.har import HarData
    from benchmark.suite import Workload
    from benchmark.tuning import grid_search
    from fedmtl import Client, TrainConfig

    g = torch.Generator().manual_seed(0)
    clients = []
    for i in range(3):
        x = torch.randn(40, 6, generator=g)
        y = (x[:, 0] > 0).long()
        clients.append(Client(f"c{i}", f"c{i}", x[:30], y[:30], x[30:], y[30:]))
    workload = Workload("toy", HarData(tuple(clients), (6, 8, 2)), TrainConfig(rounds=2, local_epochs=1,
                                                                               batch_size=8))
    result = grid_search(workload, [REGIMES["mtfl"]], lambda r: [{"lr": lr, "batch_size": 8} for lr in (0.1, 1e30)],
                         seeds=[0, 1], progress=False)
    points = {p["lr"]: p["val_accuracy"] for p in result["mtfl"]["grid"]}
    assert points[1e30] != points[1e30]  # NaN: diverged, recorded, not fatal
    assert result["mtfl"]["best"] == {"lr": 0.1, "batch_size": 8}
