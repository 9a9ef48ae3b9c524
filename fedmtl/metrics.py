"""Accuracy summaries: per client, per task, and overall in the two ways people report it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["summarize"]


def _pct(correct: float, total: float) -> float:
    return 100.0 * correct / total if total else float("nan")


def summarize(correct: torch.Tensor, total: torch.Tensor, client_ids: Sequence[str],
              client_tasks: Sequence[str]) -> dict:
    """Accuracies in percent.

    ``accuracy`` is sample-weighted (all test samples pooled: what a centralised model reports) and
    ``client_mean_accuracy`` the unweighted mean over clients (what each participant sees on average); the two
    differ when clients hold different amounts of data, so both are kept, named.
    """
    correct = correct.double()
    total = total.double()
    per_client = {cid: _pct(float(c), float(t)) for cid, c, t in zip(client_ids, correct, total, strict=True)}
    per_task: dict[str, float] = {}
    for task in sorted(set(client_tasks)):
        rows = torch.tensor([t == task for t in client_tasks])
        per_task[task] = _pct(float(correct[rows].sum()), float(total[rows].sum()))
    has_test = total > 0
    return {
        "accuracy": _pct(float(correct.sum()), float(total.sum())),
        "client_mean_accuracy": float((correct[has_test] / total[has_test]).mean() * 100) if has_test.any()
        else float("nan"),
        "per_task": per_task,
        "per_client": per_client,
    }
