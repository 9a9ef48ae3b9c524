"""Model builders with stable, readable parameter names (``fc1.weight``...) for layer specs to refer to."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["mlp"]


def mlp(sizes: Sequence[int], *, seed: int | None = None) -> nn.Sequential:
    """A ReLU multi-layer perceptron ``sizes[0] -> ... -> sizes[-1]`` with layers named ``fc1..fcN``.

    The paper's HAR model is ``mlp([561, 128, 64, 32, 6])`` and its face head ``mlp([4096, 4096, 2048, 1024, 1])``.
    """
    if len(sizes) < 2 or any(int(s) <= 0 for s in sizes):
        raise ValueError(f"mlp sizes {list(sizes)} must be at least two positive widths")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        linear = nn.Linear(int(d_in), int(d_out))
        if generator is not None:
            # Same scheme as nn.Linear's default (Kaiming-uniform, a=sqrt(5)), but reproducible per seed.
            bound = 1.0 / float(d_in) ** 0.5
            with torch.no_grad():
                linear.weight.uniform_(-bound, bound, generator=generator)
                linear.bias.uniform_(-bound, bound, generator=generator)
        layers[f"fc{i}"] = linear
        if i < len(sizes) - 1:
            layers[f"relu{i}"] = nn.ReLU()
    return nn.Sequential(layers)
