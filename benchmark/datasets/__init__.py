"""Datasets for the benchmarks: human activity recognition as 30 per-subject tasks (HAPT / UCI HAR)."""

from benchmark.datasets.hapt_pickle import RestrictedUnpickler, load_hapt_tables
from benchmark.datasets.har import (
    CLASS_NAMES,
    FEATURE_VERSION,
    SPLITS,
    HarDataset,
    SubjectData,
    default_cache_dir,
    load_har,
    locate_hapt,
    standardize,
)
from benchmark.datasets.har_features import window_features

__all__ = [
    "CLASS_NAMES",
    "FEATURE_VERSION",
    "SPLITS",
    "HarDataset",
    "SubjectData",
    "RestrictedUnpickler",
    "default_cache_dir",
    "load_har",
    "load_hapt_tables",
    "locate_hapt",
    "standardize",
    "window_features",
]
