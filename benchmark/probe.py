"""Which pre-trained layers carry the face attributes: a linear probe per attribute on hand-labelled faces.

    python -m generation generate --out faces --seeds 0-339
    python -m benchmark.probe --images faces            # data/labels/digiface-dcgan-human.jsonl by default

For each candidate, a standardised logistic regression (its L2 strength picked by an inner 3-fold CV) is scored
by 5-fold stratified cross-validation repeated twice, per attribute, on the faces whose label is not "can't
tell". An attribute with a single class among the labels (age group: no face looked like a child) is left out.
The candidates are every offline feature model: deepface's Dlib on the whole image (the former default), each
part of ``CydralDlib`` alone, their concatenation (each column z-scored alone, so a part counts in proportion to
its width), the same concatenation with its six parts weighted equally after z-scoring
(:func:`benchmark.face_parts.part_weights`: what the face suite feeds its head, so the probe measures what ships),
and 16x16 grey pixels as a no-pre-training reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedmtl.errors import FedMTLError

__all__ = ["ATTRIBUTES", "DEFAULT_LABELS", "EQUAL_PARTS", "load_hand_labels", "probe", "candidates",
           "candidate_weights", "format_table", "main"]

DEFAULT_LABELS = Path(__file__).resolve().parents[1] / "data" / "labels" / "digiface-dcgan-human.jsonl"
ATTRIBUTES = ("gender", "age_group", "glasses", "pose", "teeth")
EQUAL_PARTS = "CydralDlib (all parts weighted equally: what the suite uses)"


def load_hand_labels(path: str | Path) -> list[dict]:
    """The rows of a hand-label file (``data/labels/README.md``)."""
    try:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise FedMTLError(f"{path}: not a readable hand-label file ({exc})") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("labels"), dict) or "sample_id" not in row:
            raise FedMTLError(f"{path}: row {i + 1} lacks sample_id or labels")
    return rows


def candidates(images: Sequence[bytes], *, progress: bool = True) -> dict[str, np.ndarray]:
    """Every candidate's features of the images, by name."""
    import io

    from PIL import Image

    from benchmark.face_parts import PARTS, extract
    from benchmark.features import ExtractorConfig, deepface_home, extract_features

    parts, _ = extract(images, progress=progress, desc="CydralDlib")
    dlib, _ = extract_features(images, ExtractorConfig(model="Dlib"), home=deepface_home(), progress=progress,
                               desc="Dlib (deepface)")
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("L").resize((16, 16), Image.BOX),
                                  dtype=np.float32).ravel() for b in images])
    out = {"pixels 16x16 grey (no pre-training)": pixels, "Dlib, deepface, whole image (former default)": dlib}
    out.update({f"CydralDlib part: {name}": parts[:, cols] for name, cols in PARTS.items()})
    out["CydralDlib (all parts)"] = parts
    out[EQUAL_PARTS] = parts  # the same columns; candidate_weights gives its part weights
    return out


def candidate_weights(name: str) -> np.ndarray | None:
    """The column weights a candidate is probed with after z-scoring (None: every column counts the same)."""
    if name == EQUAL_PARTS:
        from benchmark.face_parts import part_weights

        return part_weights()
    return None


def _times(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return x * weights


def probe(features: np.ndarray, labels: np.ndarray, *, seed: int = 0,
          weights: np.ndarray | None = None) -> float | None:
    """Mean cross-validated accuracy of a linear probe on the rows labelled 0/1; None with a single class.

    ``weights`` multiply the columns after they are z-scored (inside each fold, as the suite weights its inputs),
    so under the probe's L2 penalty a column with a small weight costs more to use.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    keep = labels >= 0
    y = labels[keep]
    if len(np.unique(y)) < 2:
        return None
    if weights is not None and np.shape(weights) != (features.shape[1],):
        raise FedMTLError(f"probe: {np.shape(weights)} weights for {features.shape[1]} feature columns")
    steps = [StandardScaler()]
    if weights is not None:
        steps.append(FunctionTransformer(_times, kw_args={"weights": np.asarray(weights, dtype=np.float64)}))
    model = make_pipeline(*steps, LogisticRegressionCV(Cs=[0.001, 0.01, 0.1, 1.0], cv=3, max_iter=2000))
    folds = RepeatedStratifiedKFold(n_splits=5, n_repeats=2, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter at the weakest strengths
        return float(cross_val_score(model, features[keep], y, cv=folds).mean())


def format_table(table: dict[str, dict[str, float | None]], labels: dict[str, np.ndarray],
                 dims: dict[str, int]) -> str:
    """Markdown: one row per candidate, one column per attribute, and the majority-class row first."""
    attrs = [a for a in ATTRIBUTES if any(table[c].get(a) is not None for c in table)]
    lines = ["| features | dim | " + " | ".join(attrs) + " |", "|---|---|" + "---|" * len(attrs)]
    majority = []
    for a in attrs:
        y = labels[a][labels[a] >= 0]
        majority.append(f"{100 * max(y.mean(), 1 - y.mean()):.1f} (n={len(y)}, {100 * y.mean():.0f}% class 1)")
    lines.append("| majority class | - | " + " | ".join(majority) + " |")
    for name, scores in table.items():
        cells = [f"{100 * scores[a]:.1f}" if scores.get(a) is not None else "-" for a in attrs]
        lines.append(f"| {name} | {dims[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder with the hand-labelled faces (regenerated)")
    parser.add_argument("--labels", default=str(DEFAULT_LABELS), help="hand-label file (default: the shipped one)")
    parser.add_argument("--out", help="also write the table and the scores as JSON here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        rows = load_hand_labels(args.labels)
        folder = Path(args.images)
        missing = [r["sample_id"] for r in rows if not (folder / f"{r['sample_id']}.png").is_file()]
        if missing:
            raise FedMTLError(f"{folder}: {len(missing)} labelled face(s) missing, e.g. {missing[0]}.png "
                              "(regenerate them from their seeds)")
        images = [(folder / f"{r['sample_id']}.png").read_bytes() for r in rows]
        labels = {a: np.array([int(r["labels"].get(a, -1)) for r in rows]) for a in ATTRIBUTES}
        feats = candidates(images, progress=not args.no_progress)
        table = {name: {a: probe(x, labels[a], weights=candidate_weights(name)) for a in ATTRIBUTES}
                 for name, x in feats.items()}
    except FedMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = format_table(table, labels, {n: x.shape[1] for n, x in feats.items()})
    print(text)
    if args.out:
        from fedmtl.files import atomic_write

        atomic_write(args.out, json.dumps({"faces": len(rows), "scores": table, "table": text}, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
