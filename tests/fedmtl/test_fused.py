import pytest
import torch
from torch import nn

from fedmtl import ConfigError, LayerSpec, Simulation, TrainConfig, make_backend, mlp
from fedmtl.fused import FusedMLP

SPEC = LayerSpec.of(common="fc1", task="fc2", personal="fc3")


def run(federation, backend, spec=SPEC, **cfg):
    config = TrainConfig(**{"rounds": 3, "local_epochs": 2, "batch_size": 8, "lr": 0.05, "momentum": 0.0,
                            "clients_per_task": 2, "backend": backend, **cfg})
    sim = Simulation(mlp([10, 16, 8, 3], seed=1), spec, federation, config)
    history = sim.run(progress=False)
    return sim, [h["accuracy"] for h in history]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("aggregator", ["fedavg", "fedprox"])
def test_fused_matches_the_plain_loop(federation, momentum, aggregator):
    """Same schedule and maths as optim.SGD per client: momentum, FedProx's proximal term, partial batches."""
    aggs = {"common": {"name": aggregator, **({"mu": 0.5} if aggregator == "fedprox" else {})}, "task": "fedavg"}
    ref, ref_acc = run(federation, "loop", momentum=momentum, aggregators=aggs, keep_optimizer_state=True)
    fused, acc = run(federation, "fused", momentum=momentum, aggregators=aggs, keep_optimizer_state=True)
    assert fused.backend.name == "fused"
    assert acc == ref_acc
    for client in ("c0", "c3", "c5"):
        want, got = ref.client_state_dict(client), fused.client_state_dict(client)
        for n in want:
            assert torch.allclose(got[n], want[n], atol=2e-5, rtol=1e-4), (client, n)


def test_fused_bce_with_masked_labels_and_frozen_layer_matches_the_loop(federation):
    """Sigmoid outputs with NaN (missing) labels, and a phase that trains only the top layer."""
    from fedmtl import Client, Federation

    clients = []
    for c in federation.clients:
        y = torch.stack([(c.x_train[:, 0] > 0).float(), (c.x_train[:, 1] > 0).float(), c.x_train[:, 2] > 0], 1)
        y = y.float()
        y[::3, 1] = float("nan")
        yt = torch.stack([(c.x_test[:, i] > 0).float() for i in range(3)], 1)
        clients.append(Client(c.id, c.task, c.x_train, y, c.x_test, yt))
    fed = Federation(clients)
    phases = ({"epochs": 1, "layers": ["personal"]}, {"epochs": 1, "layers": ["common", "task"]})
    ref, ref_acc = run(fed, "loop", loss="bce", phases=phases)
    fused, acc = run(fed, "fused", loss="bce", phases=phases)
    assert acc == ref_acc
    want, got = ref.client_state_dict("c2"), fused.client_state_dict("c2")
    for n in want:
        assert torch.allclose(got[n], want[n], atol=2e-5, rtol=1e-4), n
    assert not torch.equal(got["fc1.weight"], mlp([10, 16, 8, 3], seed=1).fc1.weight)  # it did train


def test_fused_refuses_what_it_cannot_run():
    assert FusedMLP.supports(mlp([4, 3, 2]))
    assert not FusedMLP.supports(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)))
    assert not FusedMLP.supports(nn.Sequential(nn.Linear(4, 3, bias=False)))
    with pytest.raises(ConfigError, match="backend 'fused' cannot run this model"):
        make_backend("fused", nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)))


@pytest.mark.parametrize("flush_every", [16, 5000])
def test_fused_700_local_steps_match_the_plain_loop(flush_every, monkeypatch):
    """A pooled client's long local epoch (700 steps): the deferred input-layer update, flushed every k steps,
    follows optimiser-by-optimiser SGD; 5000 is the old unbounded deferral, for comparison."""
    from fedmtl import Client, Federation

    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 3, generator=g)
    x = torch.randn(1400, 10, generator=g)
    xt = torch.randn(50, 10, generator=g)
    fed = Federation([Client("pooled", "all", x, (x @ w).argmax(1), xt, (xt @ w).argmax(1))])
    monkeypatch.setattr(FusedMLP, "flush_every", flush_every)
    spec = LayerSpec.of(common=["fc1", "fc2", "fc3"])
    states = {}
    for backend in ("loop", "fused"):
        config = TrainConfig(rounds=1, local_epochs=1, batch_size=2, lr=0.02, momentum=0.0, backend=backend)
        sim = Simulation(mlp([10, 16, 8, 3], seed=1), spec, fed, config)
        sim.run(progress=False)
        states[backend] = sim.client_state_dict("pooled")
    start = mlp([10, 16, 8, 3], seed=1).state_dict()
    for n, want in states["loop"].items():
        assert not torch.allclose(want, start[n], atol=1e-2)  # 700 steps moved every layer
        torch.testing.assert_close(states["fused"][n], want, rtol=1e-4, atol=5e-5, msg=n)
