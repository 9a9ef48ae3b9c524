"""Where the engine computes (``config.device``) and how much memory it may use there.

``auto`` takes the first CUDA GPU when torch sees one and the CPU otherwise; ``cuda`` (or ``cuda:N``) on a
machine without one is a configuration error, never a silent fall-back, so a run meant for a GPU does not
quietly take a hundred times longer.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from fedmtl.errors import ConfigError

__all__ = ["DEVICE_PATTERN", "resolve_device", "free_memory"]

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(spec: str) -> torch.device:
    """The torch device a config's ``device`` names; ConfigError if it names a GPU that is not there."""
    if not isinstance(spec, str) or not DEVICE_PATTERN.fullmatch(spec):
        raise ConfigError(f"config device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config device {spec!r}: torch sees no CUDA GPU on this machine (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"config device {spec!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def free_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device``: CUDA's free memory, or the kernel's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # no /proc (not Linux): assume a modest machine rather than guess high
