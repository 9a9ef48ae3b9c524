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
