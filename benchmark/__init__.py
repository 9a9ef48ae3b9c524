"""Benchmarks of federated multi-task learning: the paper's regimes and personalised-FL baselines."""

from benchmark.regimes import REGIMES, Regime, get_regimes
from benchmark.runner import RegimeSummary, RunResult, Workload, run_regime, run_suite

__all__ = ["REGIMES", "Regime", "get_regimes", "RegimeSummary", "RunResult", "Workload", "run_regime", "run_suite"]
