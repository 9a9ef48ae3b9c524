"""The face suite's leaderboard: Table III (per-task accuracy, mean ± std over seeds) and Fig. 3 (curves per task).

Written as the HAR suite's files: ``leaderboard.md``, ``leaderboard.csv`` (one row per regime and task),
``leaderboard.json`` and ``curves.png`` (one panel per task), plus ``curves-<task>.png`` for each task.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmark.faces import FaceSummary  # noqa: E402
from fedmtl.files import atomic_write  # noqa: E402

__all__ = ["face_markdown", "face_csv", "face_json", "face_curves", "write_face_leaderboard"]


def _ranked(summaries: Sequence[FaceSummary]) -> list[FaceSummary]:
    return sorted(summaries, key=lambda s: -s.mean)


def _tasks(summaries: Sequence[FaceSummary]) -> list[str]:
    return list(summaries[0].per_task) if summaries else []


def face_markdown(suite: str, summaries: Sequence[FaceSummary], meta: dict[str, Any]) -> str:
    tasks = _tasks(summaries)
    lines = [f"## Leaderboard: {suite}", ""]
    if meta:
        lines += [", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    lines += ["| rank | regime | " + " | ".join(f"{t} (%)" for t in tasks) + " | mean (%) | seeds | rounds | lr | "
              "epochs | active/task | time (s) |",
              "|---:|---|" + "---:|" * len(tasks) + "---:|---:|---:|---:|---:|---:|---:|"]
    for rank, s in enumerate(_ranked(summaries), start=1):
        cells = " | ".join(f"{s.per_task[t]:.2f} ± {s.per_task_std[t]:.2f}" for t in tasks)
        c = s.config
        lines.append(f"| {rank} | {s.regime} | {cells} | {s.mean:.2f} ± {s.mean_std:.2f} | {s.seeds} | "
                     f"{c['rounds']} | {c['lr']:g} | {c['local_epochs']} | {c['clients_per_task']} | "
                     f"{s.seconds:.1f} |")
    lines += ["", "Per task: test accuracy on that attribute's test images (each client's test share, scored on "
              "its group's attribute); mean: over tasks; mean ± sample std over seeds."]
    return "\n".join(lines) + "\n"


def face_csv(summaries: Sequence[FaceSummary]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["regime", "task", "accuracy", "std", "seeds", "rounds", "local_epochs", "clients_per_task",
                     "batch_size", "lr", "seconds"])
    for s in _ranked(summaries):
        c = s.config
        for task in [*s.per_task, "mean"]:
            acc, std = (s.mean, s.mean_std) if task == "mean" else (s.per_task[task], s.per_task_std[task])
            writer.writerow([s.regime, task, f"{acc:.4f}", f"{std:.4f}", s.seeds, c["rounds"], c["local_epochs"],
                             c["clients_per_task"], c["batch_size"], c["lr"], f"{s.seconds:.2f}"])
    return buf.getvalue()


def face_json(suite: str, summaries: Sequence[FaceSummary], meta: dict[str, Any]) -> str:
    rows = [{
        "regime": s.regime, "per_task": s.per_task, "per_task_std": s.per_task_std, "mean": s.mean,
        "mean_std": s.mean_std, "seeds": s.seeds, "seconds": s.seconds, "config": s.config,
        "per_seed": [{"seed": r.seed, "per_task": r.per_task, "rounds": r.rounds, "curves": r.curves}
                     for r in s.runs],
    } for s in _ranked(summaries)]
    return json.dumps({"suite": suite, "meta": meta, "rows": rows}, indent=2, default=str) + "\n"


def _panel(ax: Any, summaries: Sequence[FaceSummary], task: str) -> None:
    for s in summaries:
        rounds, mean, std = s.curve(task)
        (line,) = ax.plot(rounds, mean, label=f"{s.regime} ({s.per_task[task]:.1f}%)", linewidth=1.5)
        ax.fill_between(rounds, [m - d for m, d in zip(mean, std, strict=True)],
                        [m + d for m, d in zip(mean, std, strict=True)], color=line.get_color(), alpha=0.15)
    ax.set_title(task)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)


def face_curves(suite: str, summaries: Sequence[FaceSummary], task: str | None = None) -> bytes:
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


def write_face_leaderboard(out_dir: str | os.PathLike[str], suite: str, summaries: Sequence[FaceSummary],
                           meta: dict[str, Any]) -> dict[str, Path]:
    out = Path(out_dir) / suite
    paths = {ext: out / f"leaderboard.{ext}" for ext in ("md", "csv", "json")}
    files = {paths["md"]: face_markdown(suite, summaries, meta).encode(), paths["csv"]: face_csv(summaries).encode(),
             paths["json"]: face_json(suite, summaries, meta).encode(),
             out / "curves.png": face_curves(suite, summaries)}
    for task in _tasks(summaries):
        files[out / f"curves-{task}.png"] = face_curves(suite, summaries, task)
    for path, data in files.items():  # everything rendered first: a plotting error writes nothing
        atomic_write(path, data)
    paths["png"] = out / "curves.png"
    return paths
