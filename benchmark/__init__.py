"""Benchmarks of federated multi-task learning: the paper's regimes and personalised-FL baselines."""

from benchmark.regimes import REGIMES, Regime, get_regimes
from benchmark.runner import RegimeSummary, RunResult, Task, execute, run_suite, run_task, summarize_runs
from benchmark.suite import RunPlan, Suite, SuiteData, Workload
from benchmark.suite_base import SuiteBase

__all__ = ["REGIMES", "Regime", "get_regimes", "RegimeSummary", "RunResult", "Task", "execute", "run_suite",
           "run_task", "summarize_runs", "RunPlan", "Suite", "SuiteBase", "SuiteData", "Workload"]
