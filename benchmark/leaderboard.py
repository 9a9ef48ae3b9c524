"""The HAR leaderboard: the terminal table and the files (``.md``, ``.csv``, ``.json``) written next to the curves.

Rows rank by accuracy (mean over the seeds that finished); a regime whose every seed diverged ranks last and
says so, and a row with some diverged seeds names them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.plots import plot_curves
from benchmark.runner import RegimeSummary
from fedmtl.files import atomic_write

__all__ = ["to_markdown", "to_json", "to_csv", "har_files", "write_leaderboard", "ranked", "header_lines",
           "diverged_note"]


def ranked(summaries: Sequence[RegimeSummary], key: str) -> list[RegimeSummary]:
    """Best first by ``key``; rows without a number (every seed diverged) last."""
    return sorted(summaries, key=lambda s: (math.isnan(s.value(key)), -s.value(key) if s.seeds else 0.0))


def header_lines(meta: dict[str, Any], skip: Sequence[str] = ()) -> list[str]:
    """The line of ``key: value`` pairs under the title, then each of ``meta["notes"]`` as its own line."""
    pairs = {k: v for k, v in meta.items() if k != "notes" and k not in skip}
    lines = [", ".join(f"{k}: {v}" for k, v in pairs.items()), ""] if pairs else []
    for note in meta.get("notes", ()):
        lines += [f"Note: {note}", ""]
    return lines


def diverged_note(s: RegimeSummary) -> str:
    """``-`` or which seeds diverged (``all`` when no seed finished)."""
    if not s.diverged:
        return "-"
    return "all" if not s.seeds else "seeds " + ",".join(str(d) for d in s.diverged)


def _cell(s: RegimeSummary, key: str) -> str:
    return f"{s.mean[key]:.2f} ± {s.std[key]:.2f}" if s.seeds else "diverged"


def to_markdown(suite: str, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> str:
    lines = [f"## Leaderboard: {suite}", "", *header_lines(meta)]
    lines += ["| rank | regime | accuracy (%) | client-mean accuracy (%) | seeds | diverged | rounds | lr | batch | "
              "time (s) |",
              "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for rank, s in enumerate(ranked(summaries, "accuracy"), start=1):
        lines.append(
            f"| {rank} | {s.regime} | {_cell(s, 'accuracy')} | {_cell(s, 'client_mean_accuracy')} | {s.seeds} | "
            f"{diverged_note(s)} | {s.config['rounds']} | {s.config['lr']:g} | {s.config['batch_size']} | "
            f"{s.seconds:.1f} |"
        )
    lines += ["", "accuracy: all test samples pooled (sample-weighted); client-mean: unweighted mean over clients; "
              "mean ± sample std over the seeds that finished (a diverged seed is listed, not averaged)."]
    return "\n".join(lines) + "\n"


def to_json(suite: str, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> str:
    rows = [{
        "regime": s.regime, "accuracy": s.value("accuracy"), "std": s.std.get("accuracy", math.nan),
        "seeds": s.seeds, "diverged": s.diverged,
        "client_mean_accuracy": s.value("client_mean_accuracy"),
        "client_mean_std": s.std.get("client_mean_accuracy", math.nan),
        "seconds": s.seconds, "config": s.config,
        "per_seed": [{"seed": r.seed, "accuracy": r.value("accuracy"),
                      "client_mean_accuracy": r.value("client_mean_accuracy"), "rounds": r.rounds,
                      "curve": r.curve("accuracy"), "diverged": r.diverged} for r in s.runs],
    } for s in ranked(summaries, "accuracy")]
    return json.dumps({"suite": suite, "meta": meta, "rows": rows}, indent=2, default=str) + "\n"


def to_csv(summaries: Sequence[RegimeSummary]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["regime", "accuracy", "std", "client_mean_accuracy", "client_mean_std", "seeds", "diverged",
                     "rounds", "local_epochs", "batch_size", "lr", "seconds"])
    for s in ranked(summaries, "accuracy"):
        c = s.config
        writer.writerow([s.regime, f"{s.value('accuracy'):.4f}", f"{s.std.get('accuracy', math.nan):.4f}",
                         f"{s.value('client_mean_accuracy'):.4f}", f"{s.std.get('client_mean_accuracy', math.nan):.4f}",
                         s.seeds, " ".join(map(str, s.diverged)), c["rounds"], c["local_epochs"], c["batch_size"],
                         c["lr"], f"{s.seconds:.2f}"])
    return buf.getvalue()


def har_files(suite: str, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> dict[str, bytes]:
    """Every file of the leaderboard, rendered (name -> bytes): nothing is written until all of them are."""
    return {"leaderboard.md": to_markdown(suite, summaries, meta).encode(),
            "leaderboard.csv": to_csv(summaries).encode(),
            "leaderboard.json": to_json(suite, summaries, meta).encode(),
            "curves.png": plot_curves(suite, summaries)}


def write_leaderboard(out_dir: str | os.PathLike[str], suite: str, summaries: Sequence[RegimeSummary],
                      meta: dict[str, Any]) -> dict[str, Path]:
    """Render every file, then write each atomically under ``<out_dir>/<suite>/``."""
    out = Path(out_dir) / suite
    files = har_files(suite, summaries, meta)
    for name, data in files.items():
        atomic_write(out / name, data)
    return {name.rsplit(".", 1)[-1]: out / name for name in files}
