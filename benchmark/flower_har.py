"""The HAR suite as a Flower federation factory: ``fedmtl-factory = "benchmark.flower_har:federation"``.

Every node builds the same 30 subject clients (from the local feature cache) and keeps its own; the server
only takes the model, layer spec and config. Run-config keys: ``regime`` (default ``mtfl``; the pooled
``centralized_joint`` has no federated form; ``custom`` takes ``layers``, a comma list of layer types),
``seed`` (0), ``num-rounds`` (0: the suite's), ``split`` (``blocked``), ``uci-har`` (a UCI HAR folder) and
``train-config`` (a JSON object of :class:`fedmtl.TrainConfig` keys: the whole training config, as
``python -m benchmark --engine flower`` passes it, so both engines train with exactly the same settings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from benchmark.har import HarSuiteConfig, har_workload
from benchmark.regimes import custom_regime, get_regimes
from benchmark.runner import layer_spec
from fedmtl import TrainConfig, mlp
from fedmtl.errors import ConfigError
from fedmtl.flower import FlowerSetup

__all__ = ["federation"]


def federation(run_config: Mapping[str, Any]) -> FlowerSetup:
    name = str(run_config.get("regime", "mtfl"))
    (regime,) = [custom_regime(str(run_config.get("layers", "")))] if name == "custom" else get_regimes(name)
    if regime.pooled:
        raise ConfigError(f"regime {regime.name!r} pools all data in one place: it has no federated form")
    seed = int(run_config.get("seed", 0))
    suite = HarSuiteConfig(split=str(run_config.get("split", "blocked")),
                           uci_har_path=run_config.get("uci-har") or None)
    workload = har_workload(suite, progress=False)
    if run_config.get("train-config"):
        config = TrainConfig.from_dict(json.loads(str(run_config["train-config"])), origin="run config train-config")
    else:
        config = workload.config_for(regime, seed)
    if int(run_config.get("num-rounds", 0)) > 0:
        config = config.replace(rounds=int(run_config["num-rounds"]))
    sizes = workload.data.sizes
    return FlowerSetup(model=lambda: mlp(sizes, seed=seed), spec=layer_spec(regime, len(sizes) - 1), config=config,
                       clients=lambda: workload.data.clients, info={"regime": regime.name, "seed": seed})
