"""Named scratch tensors reused from call to call.

A fresh multi-megabyte tensor per training step is mapped and faulted in anew each time (glibc hands large
blocks back to the kernel): for Ditto's HAR stack that cost a third of the run in the kernel. Hot loops that
need a temporary of the same size every step take it from here instead.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Scratch"]


class Scratch:
    """One buffer per name, grown when a larger one is asked for; its contents are whatever was left there."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        count = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < count or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[name] = like.new_empty(count)
        return buf[:count].view(*shape)

    def zeros(self, name: str, shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return self.get(name, shape, like).zero_()
