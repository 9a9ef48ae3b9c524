"""Shared fixtures: tiny real federations and models, built in milliseconds."""

from __future__ import annotations

import os
import pickle
import types

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from fedmtl import Client, Federation, Simulation  # noqa: E402


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


def assert_same_clients(want: Simulation, got: Simulation, atol: float) -> None:
    """Every client's whole model close (``atol``, rtol 1e-4) and every round's per-client scores equal: two ways
    of training one federation that must agree."""
    for client in want.federation.clients:
        a, b = want.client_state_dict(client.id), got.client_state_dict(client.id)
        for n in a:
            torch.testing.assert_close(b[n], a[n], rtol=1e-4, atol=atol, msg=f"{client.id} {n}")
    assert [h["per_client"] for h in want.history] == [h["per_client"] for h in got.history]


@pytest.fixture
def federation() -> Federation:
    return make_federation()


# ---------------------------------------------------------------- hostile-pickle probes (the unpickler tests)
def build_on_global(module: str, name: str, state: object) -> bytes:
    """A protocol-2 pickle that looks up ``module.name`` and applies BUILD with ``state`` to it."""
    body = pickle.dumps(state, protocol=2)[2:-1]  # the state's opcodes, without PROTO and STOP
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + body + b"b."


def module_state(module: types.ModuleType) -> dict[str, object]:
    """Everything a BUILD could change on the module's functions and classes: defaults, __dict__, class dicts."""
    out: dict[str, object] = {}
    for key, value in vars(module).items():
        if isinstance(value, types.FunctionType):
            out[key] = (value.__defaults__, value.__kwdefaults__, dict(value.__dict__), value.__code__)
        elif isinstance(value, type) and value.__module__ == module.__name__:
            out[key] = dict(vars(value))
    return out
