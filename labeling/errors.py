"""One error type for bad input, so the CLI can print a single clear line and exit non-zero."""

from __future__ import annotations

__all__ = ["LabelingError"]


class LabelingError(ValueError):
    """Bad input (unknown item, attribute or value, corrupt file, bad config): the message names it."""
