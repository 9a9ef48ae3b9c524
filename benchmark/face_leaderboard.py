"""The face suite's leaderboard: Table III (per-task accuracy, mean ± std over seeds) and Fig. 3 (curves per task).

Written as the HAR suite's files: ``leaderboard.md``, ``leaderboard.csv`` (one row per regime and task),
``leaderboard.json`` and ``curves.png`` (one panel per task), plus ``curves-<task>.png`` for each task. Under
the ranked rows, the majority-class baseline per task (always answering the more frequent class of the scored
test labels: what a row must beat to have learnt anything); above them, the dataset's own notes (e.g. how its
labels were made and how accurate they measured).
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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmark.leaderboard import diverged_note, header_lines, ranked  # noqa: E402
from benchmark.runner import RegimeSummary  # noqa: E402
from fedmtl.files import atomic_write  # noqa: E402

__all__ = ["face_markdown", "face_csv", "face_json", "face_curves", "face_files", "write_face_leaderboard"]

MAJORITY = "majority_class"  # the baseline's name in every file


def _tasks(summaries: Sequence[RegimeSummary], meta: dict[str, Any] | None = None) -> list[str]:
    if meta and meta.get("tasks"):
        return list(meta["tasks"])
    for s in summaries:
        if s.seeds:
            return [k for k in s.mean if k != "mean"]
    return []


def _cell(s: RegimeSummary, key: str) -> str:
    return f"{s.mean[key]:.2f} ± {s.std[key]:.2f}" if s.seeds else "diverged"


def _majority(meta: dict[str, Any], tasks: Sequence[str]) -> dict[str, float]:
    found = meta.get(MAJORITY) or {}
    out = {t: float(found[t]) for t in tasks if t in found}
    if out and len(out) == len(tasks):
        out["mean"] = sum(out.values()) / len(out)
    return out


def face_markdown(suite: str, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> str:
    tasks = _tasks(summaries, meta)
    lines = [f"## Leaderboard: {suite}", "", *header_lines(meta, skip=(MAJORITY,))]
    lines += ["| rank | regime | " + " | ".join(f"{t} (%)" for t in tasks) + " | mean (%) | seeds | diverged | "
              "rounds | lr | epochs | active/task | time (s) |",
              "|---:|---|" + "---:|" * len(tasks) + "---:|---:|---|---:|---:|---:|---:|---:|"]
    for rank, s in enumerate(ranked(summaries, "mean"), start=1):
        cells = " | ".join(_cell(s, t) for t in tasks)
        c = s.config
        lines.append(f"| {rank} | {s.regime} | {cells} | {_cell(s, 'mean')} | {s.seeds} | {diverged_note(s)} | "
                     f"{c['rounds']} | {c['lr']:g} | {c['local_epochs']} | {c['clients_per_task']} | "
                     f"{s.seconds:.1f} |")
    baseline = _majority(meta, tasks)
    if baseline:
        cells = " | ".join(f"{baseline[t]:.2f}" for t in tasks)
        lines.append(f"| - | *majority class* | {cells} | {baseline['mean']:.2f} | - | - | - | - | - | - | - |")
    lines += ["", "Per task: test accuracy on that attribute's test images (each client's test share, scored on "
              "its group's attribute); mean: over tasks; mean ± sample std over the seeds that finished (a diverged "
              "seed is listed, not averaged); majority class: always answering the more frequent class of those "
              "test labels."]
    return "\n".join(lines) + "\n"


def face_csv(summaries: Sequence[RegimeSummary], meta: dict[str, Any] | None = None) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["regime", "task", "accuracy", "std", "seeds", "diverged", "rounds", "local_epochs",
                     "clients_per_task", "batch_size", "lr", "seconds"])
    tasks = _tasks(summaries, meta)
    for s in ranked(summaries, "mean"):
        c = s.config
        for task in [*tasks, "mean"]:
            writer.writerow([s.regime, task, f"{s.value(task):.4f}", f"{s.std.get(task, math.nan):.4f}", s.seeds,
                             " ".join(map(str, s.diverged)), c["rounds"], c["local_epochs"], c["clients_per_task"],
                             c["batch_size"], c["lr"], f"{s.seconds:.2f}"])
    for task, acc in _majority(meta or {}, tasks).items():
        writer.writerow([MAJORITY, task, f"{acc:.4f}", "", "", "", "", "", "", "", "", ""])
    return buf.getvalue()


def face_json(suite: str, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> str:
    tasks = _tasks(summaries, meta)
    rows = [{
        "regime": s.regime, "per_task": {t: s.value(t) for t in tasks},
        "per_task_std": {t: s.std.get(t, math.nan) for t in tasks}, "mean": s.value("mean"),
        "mean_std": s.std.get("mean", math.nan), "seeds": s.seeds, "diverged": s.diverged, "seconds": s.seconds,
        "config": s.config,
        "per_seed": [{"seed": r.seed, "per_task": {t: r.value(t) for t in tasks}, "rounds": r.rounds,
                      "curves": {t: r.curve(t) for t in tasks}, "diverged": r.diverged} for r in s.runs],
    } for s in ranked(summaries, "mean")]
    board = {"suite": suite, "meta": meta, "rows": rows, "baselines": {MAJORITY: _majority(meta, tasks)}}
    return json.dumps(board, indent=2, default=str) + "\n"


def _panel(ax: Any, summaries: Sequence[RegimeSummary], task: str) -> None:
    for s in summaries:
        rounds, mean, std = s.curve(task)
        if not rounds:
            continue
        (line,) = ax.plot(rounds, mean, label=f"{s.regime} ({s.value(task):.1f}%)", linewidth=1.5)
        ax.fill_between(rounds, [m - d for m, d in zip(mean, std, strict=True)],
                        [m + d for m, d in zip(mean, std, strict=True)], color=line.get_color(), alpha=0.15)
    ax.set_title(task)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)


def face_curves(suite: str, summaries: Sequence[RegimeSummary], task: str | None = None) -> bytes:
    """Test accuracy per round (mean ± std over seeds): one task, or every task as a panel (``task=None``)."""
    tasks = [task] if task else _tasks(summaries)
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), dpi=100, squeeze=False)
    for ax, t in zip(axes.flat, tasks, strict=False):
        _panel(ax, summaries, t)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(f"{suite}: test accuracy per round (mean ± std over seeds)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def face_files(suite: str, summaries: Sequence[RegimeSummary], meta: dict[str, Any]) -> dict[str, bytes]:
    """Every file of the leaderboard, rendered (name -> bytes): a plotting error writes nothing."""
    files = {"leaderboard.md": face_markdown(suite, summaries, meta).encode(),
             "leaderboard.csv": face_csv(summaries, meta).encode(),
             "leaderboard.json": face_json(suite, summaries, meta).encode(),
             "curves.png": face_curves(suite, summaries)}
    for task in _tasks(summaries, meta):
        files[f"curves-{task}.png"] = face_curves(suite, summaries, task)
    return files


def write_face_leaderboard(out_dir: str | os.PathLike[str], suite: str, summaries: Sequence[RegimeSummary],
                           meta: dict[str, Any]) -> dict[str, Path]:
    out = Path(out_dir) / suite
    files = face_files(suite, summaries, meta)
    for name, data in files.items():  # everything rendered first
        atomic_write(out / name, data)
    return {"md": out / "leaderboard.md", "csv": out / "leaderboard.csv", "json": out / "leaderboard.json",
            "png": out / "curves.png"}
