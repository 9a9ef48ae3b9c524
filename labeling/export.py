"""Export resolved labels as a Hugging Face ``DatasetDict`` (train/test) and publish it to the Hub.

Labels are resolved by the policy in ``labeling.provenance`` (people's majority first; a model's label only where
no person gave one, and only at ``min_confidence`` or above); each row carries, per attribute, where its label
came from (``<attribute>_source``) and that source's confidence (``<attribute>_confidence``). The card's
``annotations_creators`` and its "How the labels were made" section are computed from what the exported labels
actually came from, with counts per source and, when an accuracy report is given, the models' measured accuracy.

The output folder holds ``save_to_disk`` files (``load_from_disk``), Parquet shards under ``data/`` and a dataset
card ``README.md`` whose YAML ``configs`` point at the shards (``load_dataset`` on the folder or a Hub repo).
Images are embedded as bytes, so the export survives deleting the source images. The folder is built under a
temporary name and swapped in with one atomic rename, so a killed export leaves the previous one intact.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import random
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from labeling.errors import LabelingError
from labeling.images import Catalog
from labeling.provenance import PEOPLE, TIE, Resolved, annotations_creators, is_model, people_ratings, resolve_labels
from labeling.stats import compute_stats
from labeling.store import LabelStore

__all__ = ["ExportResult", "export_dataset", "publish", "split_items", "TIE_POLICIES"]

TIE_POLICIES = ("drop", "review")
SHARD_BYTES = 256 * 1024 * 1024
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class ExportResult:
    out: Path
    splits: dict[str, int]
    ties: int
    review: int
    missing_images: list[str]
    sources: dict[str, Counter] | None = None  # attribute -> {source: labels}


def split_items(strata: dict[str, tuple], test_fraction: float, seed: int) -> dict[str, str]:
    """Seeded stratified split: ``{item: "train"|"test"}``; items are grouped by their stratum key.

    Within each stratum (shuffled with ``seed``) items go to test while the running share of test items is below
    ``test_fraction``, carried across strata in a fixed order, so the total matches the fraction and every
    stratum with enough items appears in both splits.
    """
    if not 0 < test_fraction < 1:
        raise LabelingError(f"test fraction must be between 0 and 1, got {test_fraction}")
    rng = random.Random(seed)
    groups: dict[tuple, list[str]] = defaultdict(list)
    for item in sorted(strata):
        groups[strata[item]].append(item)
    out: dict[str, str] = {}
    carry = 0.0
    for key in sorted(groups, key=repr):
        members = groups[key]
        rng.shuffle(members)
        want = len(members) * test_fraction + carry
        n_test = math.floor(want + 0.5) if len(members) > 1 else int(want >= 0.5)
        carry = want - n_test
        for k, item in enumerate(members):
            out[item] = "test" if k < n_test else "train"
    return out


def _features(store: LabelStore):
    import datasets

    spec = {"image": datasets.Image(), "sample_id": datasets.Value("string"), "seed": datasets.Value("int64"),
            "network": datasets.Value("string")}
    for attribute in store.attributes:
        spec[attribute.name] = datasets.ClassLabel(names=list(attribute.values))
        spec[f"{attribute.name}_source"] = datasets.Value("string")
        spec[f"{attribute.name}_confidence"] = datasets.Value("float32")
    return datasets.Features(spec)


def _yaml_card(store: LabelStore, splits: dict[str, int], nbytes: dict[str, int], creators: list[str]) -> str:
    lines = ["---", "dataset_info:", "  features:", "  - name: image", "    dtype: image",
             "  - name: sample_id", "    dtype: string", "  - name: seed", "    dtype: int64",
             "  - name: network", "    dtype: string"]
    for attribute in store.attributes:
        lines += [f"  - name: {attribute.name}", "    dtype:", "      class_label:", "        names:"]
        lines += [f"          '{k}': {name}" for k, name in enumerate(attribute.values)]
        lines += [f"  - name: {attribute.name}_source", "    dtype: string",
                  f"  - name: {attribute.name}_confidence", "    dtype: float32"]
    lines.append("  splits:")
    for split, n in splits.items():
        lines += [f"  - name: {split}", f"    num_bytes: {nbytes[split]}", f"    num_examples: {n}"]
    lines += ["configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    lines += ["annotations_creators:", *[f"- {c}" for c in creators]]
    lines += ["task_categories:", "- image-classification", "tags:", "- synthetic", "- faces", "---", ""]
    return "\n".join(lines)


def _provenance_lines(store: LabelStore, sources: dict[str, Counter], min_confidence: float,
                      accuracy: dict[str, Any] | None, ties: int, review: int) -> list[str]:
    """The card's account of who made the labels, from the exported labels themselves."""
    stats = compute_stats(store)
    people = sorted(a for a in stats.annotators if not is_model(a))
    total = Counter()
    for counter in sources.values():
        total.update(counter)
    models = sorted(s for s in total if is_model(s))
    lines = ["## How the labels were made", "",
             "Policy: people's majority first; a model's label only where no person labelled that attribute, "
             f"and only at confidence >= {min_confidence:g}; anything else is -1. Each row's "
             "`<attribute>_source` says where its label came from and `<attribute>_confidence` how sure that "
             "source was (people: the share of people agreeing with the majority).", "",
             f"- labels from people: {total.get(PEOPLE, 0)} ({len(people)} annotator(s) in a browser, "
             "keyboard or grid mode; suggestions were shown pre-selected and the label is the person's answer)"]
    for model in models:
        lines.append(f"- labels from {model}: {total[model]}")
    lines.append(f"- left unlabelled (-1: can't tell, ties, unsure or below the confidence floor): "
                 f"{sum(n for s, n in total.items() if s not in {PEOPLE, *models})}")
    if ties:
        lines.append(f"- {ties} tied (item, attribute) pairs among people were left unlabelled (-1)"
                     + (f"; {review} tied items were held back for review (review.jsonl)" if review else ""))
    lines += ["", "| attribute | " + " | ".join(["people", *models, "unlabelled"]) + " |",
              "|---|" + "---|" * (len(models) + 2)]
    for name, counter in sources.items():
        unlabelled = sum(n for s, n in counter.items() if s not in {PEOPLE, *models})
        lines.append(f"| {name} | " + " | ".join(str(counter.get(s, 0)) for s in [PEOPLE, *models])
                     + f" | {unlabelled} |")
    if models:
        lines += ["", "### Measured accuracy of the machine labels", ""]
        if accuracy:
            lines += [f"Measured on {accuracy.get('people_items', '?')} hand-labelled reference faces "
                      f"(split: {accuracy.get('split', '?')}).", "",
                      "| attribute | source | coverage | accuracy | majority baseline | sure share | sure accuracy |",
                      "|---|---|---|---|---|---|---|"]
            for row in accuracy.get("rows", []):
                pct = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
                lines.append(f"| {row['attribute']} | {row['source']} | {pct(row['coverage'])} | "
                             f"{pct(row['accuracy'])} | {pct(row['baseline'])} | {pct(row['sure_share'])} | "
                             f"{pct(row['sure_accuracy'])} |")
        else:
            lines.append("Not measured for this export (no accuracy report given to `export --accuracy`).")
    lines += ["", "- Agreement between people per attribute (items with two or more people):"]
    for name, row in stats.agreement.items():
        value = "n/a" if math.isnan(row["value"]) else f"{row['value']:.3f}"
        lines.append(f"  - {name}: {row['measure']} = {value} over {row['items']} items")
    return lines


def _card(store: LabelStore, catalog: Catalog, splits: dict[str, int], counts: dict[str, dict[str, list[int]]],
          ties: int, review: int, nbytes: dict[str, int], sources: dict[str, Counter], min_confidence: float,
          accuracy: dict[str, Any] | None) -> str:
    total = Counter()
    for counter in sources.values():
        total.update(counter)
    creators = annotations_creators(total)
    made_by = " and ".join({"expert-generated": "people", "machine-generated": "machine-label models"}.get(c, c)
                           for c in creators)
    body = [_yaml_card(store, splits, nbytes, creators), "# Synthetic face attributes", "",
            f"Faces made by a generative network, labels made by {made_by} (see below), for federated multi-task "
            "learning on face attributes (five binary attributes, values as in the paper's Table I). `-1` means "
            "unlabelled (including people's \"can't tell\").", "", "## Label distribution (Table II style)", ""]
    header = "| attribute | value | " + " | ".join(splits) + " |"
    body += [header, "|" + "---|" * (2 + len(splits))]
    for attribute in store.attributes:
        for k, name in enumerate(attribute.values):
            body.append(f"| {attribute.name} | {k} = {name} | "
                        + " | ".join(str(counts[split][attribute.name][k]) for split in splits) + " |")
        body.append(f"| {attribute.name} | unlabelled | "
                    + " | ".join(str(counts[split][attribute.name][-1]) for split in splits) + " |")
    networks = ", ".join(catalog.networks()) or "unknown (plain image folder)"
    licences = "; ".join(catalog.licences()) or "not recorded in the source manifest"
    body += ["", "## Generator", "", f"- network(s): {networks}", f"- licence: {licences}", ""]
    body += _provenance_lines(store, sources, min_confidence, accuracy, ties, review)
    body += ["", "Splits are seeded and stratified on the label combination.", ""]
    return "\n".join(body)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd = -100
    return libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _clean_stale(out: Path) -> None:
    for path in out.parent.glob(f".{out.name}.tmp-*"):
        pid = path.name.rsplit("-", 1)[-1]
        alive = pid.isdigit() and Path(f"/proc/{pid}").exists() and int(pid) != os.getpid()
        if not alive:
            shutil.rmtree(path, ignore_errors=True)


def export_dataset(store: LabelStore, catalog: Catalog, out: str | Path, *, test_fraction: float = 0.2,
                   seed: int = 0, ties: str = "drop", include_unlabelled: bool = False,
                   progress: bool = True, min_confidence: float = 0.0,
                   accuracy: dict[str, Any] | None = None) -> ExportResult:
    """Write the dataset folder ``out`` (see the module docstring); returns what went where.

    ``accuracy`` is a report from ``labeling.accuracy`` (its ``as_dict()``), quoted in the card.
    """
    import datasets

    if ties not in TIE_POLICIES:
        raise LabelingError(f"unknown tie policy {ties!r} (expected one of {TIE_POLICIES})")
    out = Path(out)
    if out.exists() and not (out / "dataset_dict.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise LabelingError(f"{out}: exists and is not an earlier export; refusing to replace it")
    if not 0.0 <= min_confidence <= 1.0:
        raise LabelingError(f"min confidence must be between 0 and 1, got {min_confidence}")
    resolved = resolve_labels(store, min_confidence)
    tied = [(item, name, {}) for (item, name), r in sorted(resolved.items()) if r.source == TIE]
    if tied:
        votes = people_ratings(store)
        tied = [(item, name, votes.get((item, name), {})) for item, name, _ in tied]
    review_items = sorted({item for item, _, _ in tied}) if ties == "review" else []
    labelled = {item for (item, _), r in resolved.items() if r.value != -1 or r.source == PEOPLE} | \
        {item for item, _, _ in tied}
    items = [i for i in store.items() if (include_unlabelled or i in labelled) and i not in set(review_items)]
    missing = [i for i in items if i not in catalog.items]
    items = [i for i in items if i in catalog.items]
    if not items:
        raise LabelingError(f"nothing to export: no labelled items of {catalog.root} in {store.path}")
    names = store.attributes.names
    none = Resolved(-1, "none", 0.0)
    chosen = {i: tuple(resolved.get((i, name), none) for name in names) for i in items}
    values = {i: tuple(r.value for r in row) for i, row in chosen.items()}
    assignment = split_items(values, test_fraction, seed)
    features = _features(store)
    columns: dict[str, dict[str, list[Any]]] = {s: defaultdict(list) for s in ("train", "test")}
    for item_id in tqdm(items, desc="reading images", unit="img", disable=not progress, leave=False):
        entry = catalog.items[item_id]
        try:
            data = entry.path.read_bytes()
        except OSError as exc:
            raise LabelingError(f"{entry.path}: cannot read ({exc.strerror})") from None
        col = columns[assignment[item_id]]
        col["image"].append({"bytes": data, "path": None})
        col["sample_id"].append(item_id)
        col["seed"].append(entry.seed)
        col["network"].append(entry.network)
        for name, r in zip(names, chosen[item_id], strict=True):
            col[name].append(r.value)
            col[f"{name}_source"].append(r.source if r.value != -1 or r.source in (PEOPLE, TIE) else "none")
            col[f"{name}_confidence"].append(r.confidence)
    splits = {s: len(columns[s]["sample_id"]) for s in ("train", "test") if columns[s]["sample_id"]}
    dataset = datasets.DatasetDict({s: datasets.Dataset.from_dict(dict(columns[s]), features=features)
                                    for s in splits})
    sources = {name: Counter(chosen[i][k].source if chosen[i][k].value != -1 else "unlabelled" for i in items)
               for k, name in enumerate(names)}
    counts = {s: {name: defaultdict(int) for name in names} for s in splits}
    for s in splits:
        for name in names:
            for v in columns[s][name]:
                counts[s][name][v] += 1

    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        dataset.save_to_disk(str(tmp))
        shard_names: dict[str, list[str]] = {}
        for s in splits:
            size = sum(len(x["bytes"]) for x in columns[s]["image"])
            n = max(1, math.ceil(size / SHARD_BYTES))
            shard_names[s] = []
            for k in range(n):
                name = f"data/{s}-{k:05d}-of-{n:05d}.parquet"
                (tmp / "data").mkdir(exist_ok=True)
                dataset[s].shard(n, k, contiguous=True).to_parquet(str(tmp / name))
                shard_names[s].append(name)
        nbytes = {s: dataset[s].data.nbytes for s in splits}
        (tmp / "README.md").write_text(_card(store, catalog, splits, counts, len(tied), len(review_items), nbytes,
                                             sources, min_confidence, accuracy))
        if review_items:
            lines = [json.dumps({"item": i, "attribute": a, "votes": v}) for i, a, v in tied]
            (tmp / "review.jsonl").write_text("\n".join(lines) + "\n")
        if out.exists():
            if not _exchange(tmp, out):  # no atomic swap here: move the old one aside, then in, then delete
                old = out.parent / f".{out.name}.tmp-{os.getpid()}-old"
                os.rename(out, old)
                os.rename(tmp, out)
                tmp = old
        else:
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, splits, len(tied), len(review_items), missing, sources)


def publish(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Push an exported folder to the Hub as a dataset repo (token from HF_TOKEN unless given); returns its URL."""
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub import constants as hub_constants

    folder = Path(folder)
    if not (folder / "dataset_dict.json").is_file():
        raise LabelingError(f"{folder}: not an export folder (no dataset_dict.json); run `python -m labeling export`")
    if hub_constants.HF_HUB_OFFLINE:
        raise LabelingError("publish: HF_HUB_OFFLINE=1 is set, so the Hub cannot be reached; unset it to publish")
    token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise LabelingError("publish: no Hub token; set HF_TOKEN to a token with write access")
    dataset = datasets.load_from_disk(str(folder))
    try:
        dataset.push_to_hub(repo_id, private=private, token=token)
        HfApi(token=token).upload_file(path_or_fileobj=str(folder / "README.md"), path_in_repo="README.md",
                                       repo_id=repo_id, repo_type="dataset",
                                       commit_message="Dataset card from labeling export")
    except Exception as exc:  # network, auth and Hub errors all end the same way: one line, nothing local changed
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if "connect" in reason.lower() or isinstance(exc, OSError):
            reason = f"cannot reach the Hub at {hub_constants.ENDPOINT} (offline?): {reason}"
        raise LabelingError(f"publish to {repo_id!r} failed: {reason}") from None
    return f"https://huggingface.co/datasets/{repo_id}"
