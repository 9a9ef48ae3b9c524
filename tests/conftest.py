"""Shared fixtures: tiny real federations and models, built in milliseconds."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from fedmtl import Client, Federation  # noqa: E402


def make_federation(clients: int = 6, tasks: int = 2, features: int = 10, classes: int = 3,
                    seed: int = 0) -> Federation:
    """Clients of unequal sizes (so last batches are partial and some clients finish early)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(clients):
        n = 20 + 7 * i
        w = torch.randn(features, classes, generator=g)
        x = torch.randn(n, features, generator=g)
        xt = torch.randn(15, features, generator=g)
        out.append(Client(f"c{i}", f"t{i % tasks}", x, (x @ w).argmax(1), xt, (xt @ w).argmax(1)))
    return Federation(out)


@pytest.fixture
def federation() -> Federation:
    return make_federation()
