"""The HAR suite as a Flower federation factory: ``fedmtl-factory = "benchmark.flower_har:federation"``.

Every node builds the same 30 subject clients (from the local feature cache) and keeps its own; the server
only takes the model, layer spec and config. Run-config keys: ``regime`` (default ``mtfl``; the pooled
``centralized_joint`` has no federated form), ``seed`` (0), ``num-rounds`` (0: the suite's), ``split`` (``blocked``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmark.har import HarSuiteConfig, har_workload
from benchmark.regimes import get_regimes
from benchmark.runner import layer_spec
from fedmtl import mlp
from fedmtl.errors import ConfigError
from fedmtl.flower import FlowerSetup

__all__ = ["federation"]


def federation(run_config: Mapping[str, Any]) -> FlowerSetup:
    (regime,) = get_regimes(str(run_config.get("regime", "mtfl")))
    if regime.pooled:
        raise ConfigError(f"regime {regime.name!r} pools all data in one place: it has no federated form")
    seed = int(run_config.get("seed", 0))
    suite = HarSuiteConfig(split=str(run_config.get("split", "blocked")))
    workload = har_workload(suite, progress=False)
    config = workload.config_for(regime, seed)
    if int(run_config.get("num-rounds", 0)) > 0:
        config = config.replace(rounds=int(run_config["num-rounds"]))
    sizes = workload.sizes
    return FlowerSetup(model=lambda: mlp(sizes, seed=seed), spec=layer_spec(regime, len(sizes) - 1), config=config,
                       clients=lambda: workload.clients, info={"regime": regime.name, "seed": seed})
