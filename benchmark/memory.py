"""Memory sizes on the command line (``--memory-budget 4G``) and the memory this machine has free."""

from __future__ import annotations

import argparse
import os
import re

__all__ = ["parse_size", "available_memory"]

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``4G``, ``512M``, ``1.5GiB`` or a plain number of bytes (powers of 1024); an argparse type."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 4G, 512M or 1073741824")
    value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 bytes")
    return value


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``); None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
