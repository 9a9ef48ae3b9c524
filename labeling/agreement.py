"""Inter-annotator agreement and label resolution, as pure functions over plain data.

Cohen's kappa for two annotators, Fleiss' kappa for a fixed number of ratings per item, Krippendorff's alpha
(nominal) for any number of annotators with missing ratings. Resolution is by majority; ties are reported, not
guessed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["cohen_kappa", "fleiss_kappa", "krippendorff_alpha", "majority", "resolve"]


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Cohen's kappa of two raters over the same items; NaN when chance agreement is total (one category)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} vs {len(b)} ratings")
    if not a:
        return math.nan
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items x categories) table of rating counts, every row summing to the same m >= 2."""
    counts = np.asarray(counts, dtype=float)
    m = counts.sum(axis=1)
    if counts.ndim != 2 or len(counts) == 0 or not np.all(m == m[0]) or m[0] < 2:
        raise ValueError("fleiss_kappa: need a non-empty table with the same number (>= 2) of ratings per item")
    m0 = m[0]
    p_item = ((counts**2).sum(axis=1) - m0) / (m0 * (m0 - 1))
    p_cat = counts.sum(axis=0) / counts.sum()
    pe = float((p_cat**2).sum())
    return math.nan if pe == 1 else (float(p_item.mean()) - pe) / (1 - pe)


def krippendorff_alpha(units: Iterable[Sequence[int]]) -> float:
    """Krippendorff's alpha (nominal) from each unit's list of values (units with fewer than 2 values ignored)."""
    pairable = [list(u) for u in units if len(u) >= 2]
    categories = sorted({v for u in pairable for v in u})
    if not pairable or len(categories) < 2:
        return math.nan if not pairable else 1.0
    index = {c: k for k, c in enumerate(categories)}
    coincidence = np.zeros((len(categories), len(categories)))
    for unit in pairable:
        c = np.bincount([index[v] for v in unit], minlength=len(categories)).astype(float)
        coincidence += (np.outer(c, c) - np.diag(c)) / (len(unit) - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    disagree_observed = coincidence.sum() - np.trace(coincidence)
    disagree_expected = (n_c.sum() ** 2 - (n_c**2).sum()) / (n - 1)
    return 1.0 - disagree_observed / disagree_expected


def majority(values: Sequence[int]) -> int | None:
    """The most frequent value, or None on a tie (or no values)."""
    if not values:
        return None
    (top, count), *rest = Counter(values).most_common()
    return None if rest and rest[0][1] == count else top


def resolve(ratings: Mapping[tuple[str, str], Mapping[str, int]]) -> tuple[dict[tuple[str, str], int], list]:
    """Majority per (item, attribute) over annotators: ``({(item, attr): value}, [(item, attr, votes) ties])``."""
    resolved: dict[tuple[str, str], int] = {}
    ties = []
    for key, by_annotator in ratings.items():
        winner = majority(list(by_annotator.values()))
        if winner is None:
            ties.append((*key, dict(by_annotator)))
        else:
            resolved[key] = winner
    return resolved, ties
