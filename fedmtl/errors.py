"""Errors the toolkit raises for bad input; CLIs print them as one line and exit non-zero."""

from __future__ import annotations

__all__ = ["FedMTLError", "ConfigError", "LayerSpecError", "DatasetError", "CheckpointError", "DivergedError",
           "FetchError"]


class FedMTLError(ValueError):
    """Base class: a user-facing problem with an input, phrased as one line naming the input."""


class ConfigError(FedMTLError):
    """A configuration value (regime, suite, aggregator, TOML key...) is unknown or out of range."""


class LayerSpecError(FedMTLError):
    """A layer specification leaves a parameter untyped, types it twice, or names nothing."""


class DatasetError(FedMTLError):
    """A dataset path or file is missing, malformed or not what it claims to be."""


class CheckpointError(FedMTLError):
    """A checkpoint cannot be used to resume this run."""


class DivergedError(FedMTLError):
    """Training produced NaN/Inf weights or updates (usually a learning rate too large for the data)."""


class FetchError(FedMTLError):
    """A pinned file cannot be fetched, or what was fetched does not match its pinned SHA-256."""
