"""Accuracy-per-round curves (the paper's Fig. 3/4) as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from benchmark.runner import RegimeSummary

__all__ = ["plot_curves"]


def plot_curves(suite: str, summaries: Sequence[RegimeSummary]) -> bytes:
    """Test accuracy per round, mean over seeds with a ±1 std band, one line per regime."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for s in summaries:
        rounds, mean, std = s.curve("accuracy")
        if not rounds:  # every seed diverged: nothing to draw
            continue
        (line,) = ax.plot(rounds, mean, label=f"{s.regime} ({s.value('accuracy'):.2f}%)", linewidth=1.6)
        ax.fill_between(rounds, [m - d for m, d in zip(mean, std, strict=True)],
                        [m + d for m, d in zip(mean, std, strict=True)], color=line.get_color(), alpha=0.15)
    finals = [s.value("accuracy") for s in summaries if s.seeds]
    if finals:
        ax.set_ylim(max(0.0, min(finals) - 15), 100.5)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{suite}: test accuracy per round (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
