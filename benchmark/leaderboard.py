"""Leaderboards: the terminal table and the files (``.md``, ``.csv``, ``.json``) written next to the curves."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.plots import plot_curves
from benchmark.runner import RegimeSummary
from fedmtl.files import atomic_write

__all__ = ["to_markdown", "to_json", "to_csv", "write_leaderboard"]


def _ranked(summaries: Sequence[RegimeSummary]) -> list[RegimeSummary]:
    return sorted(summaries, key=lambda s: -s.accuracy)


def to_markdown(suite: str, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> str:
    lines = [f"## Leaderboard: {suite}", ""]
    if meta:
        lines += [", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    lines += ["| rank | regime | accuracy (%) | client-mean accuracy (%) | seeds | rounds | lr | batch | time (s) |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rank, s in enumerate(_ranked(summaries), start=1):
        lines.append(
            f"| {rank} | {s.regime} | {s.accuracy:.2f} ± {s.std:.2f} | {s.client_mean_accuracy:.2f} ± "
            f"{s.client_mean_std:.2f} | {s.seeds} | {s.config['rounds']} | {s.config['lr']:g} | "
            f"{s.config['batch_size']} | {s.seconds:.1f} |"
        )
    lines += ["", "accuracy: all test samples pooled (sample-weighted); client-mean: unweighted mean over clients; "
              "mean ± sample std over seeds."]
    return "\n".join(lines) + "\n"


def to_json(suite: str, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> str:
    rows = [{
        "regime": s.regime, "accuracy": s.accuracy, "std": s.std, "seeds": s.seeds,
        "client_mean_accuracy": s.client_mean_accuracy, "client_mean_std": s.client_mean_std,
        "seconds": s.seconds, "config": s.config,
        "per_seed": [{"seed": r.seed, "accuracy": r.accuracy, "client_mean_accuracy": r.client_mean_accuracy,
                      "curve": r.curve} for r in s.runs],
    } for s in _ranked(summaries)]
    return json.dumps({"suite": suite, "meta": meta, "rows": rows}, indent=2, default=str) + "\n"


def to_csv(summaries: Sequence[RegimeSummary]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["regime", "accuracy", "std", "client_mean_accuracy", "client_mean_std", "seeds", "rounds",
                     "local_epochs", "batch_size", "lr", "seconds"])
    for s in _ranked(summaries):
        c = s.config
        writer.writerow([s.regime, f"{s.accuracy:.4f}", f"{s.std:.4f}", f"{s.client_mean_accuracy:.4f}",
                         f"{s.client_mean_std:.4f}", s.seeds, c["rounds"], c["local_epochs"], c["batch_size"],
                         c["lr"], f"{s.seconds:.2f}"])
    return buf.getvalue()


def write_leaderboard(out_dir: str | os.PathLike[str], suite: str, summaries: Sequence[RegimeSummary],
                      meta: dict[str, Any]) -> dict[str, Path]:
    out = Path(out_dir) / suite
    paths = {ext: out / f"leaderboard.{ext}" for ext in ("md", "csv", "json")}
    atomic_write(paths["md"], to_markdown(suite, summaries, meta).encode())
    atomic_write(paths["csv"], to_csv(summaries).encode())
    atomic_write(paths["json"], to_json(suite, summaries, meta).encode())
    paths["png"] = out / "curves.png"
    atomic_write(paths["png"], plot_curves(suite, summaries))
    return paths
