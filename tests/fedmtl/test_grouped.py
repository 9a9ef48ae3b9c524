"""Grouped training (clients sharing base weights as one GEMM per group, deltas left factored) follows the
per-client paths: the plain loop and the fused backend's own path, for every layer type, phases, a pooled client,
FedAvg's one-GEMM fold and a median that needs the deltas materialised."""

from __future__ import annotations

import pytest
import torch
from test_streaming import OPTIONS, REGIMES, outlier_federation

from fedmtl import AGGREGATORS, DivergedError, LayerSpec, Simulation, TrainConfig, make_aggregator, mlp
from fedmtl.backends import LocalSGD
from fedmtl.fused import FusedMLP
from fedmtl.grouped import correction_ratio
from fedmtl.schedule import make_schedule
from tests.conftest import assert_same_clients

SIZES = [10, 16, 8, 3]


@pytest.fixture
def always_grouped(monkeypatch):
    """Tiny models never pay for grouping (their corrections outweigh their matmuls): force it, and count it."""
    monkeypatch.setattr(FusedMLP, "grouped_max_ratio", float("inf"))
    calls = []
    real = FusedMLP.train_grouped

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FusedMLP, "train_grouped", counted)
    return calls


def simulate(spec, backend, federation=None, chunk=None, **cfg) -> Simulation:
    config = TrainConfig(**{"rounds": 2, "local_epochs": 2, "batch_size": 8, "lr": 0.02, "momentum": 0.0,
                            "clients_per_task": 3, "backend": backend, **cfg})
    sim = Simulation(mlp(SIZES, seed=1), spec, federation or outlier_federation(), config)
    if chunk is not None:
        sim.chunk_size = chunk
    sim.run(progress=False)
    return sim


@pytest.mark.parametrize("regime", [r for r in REGIMES if r not in ("ditto", "fedprox_momentum")])
@pytest.mark.parametrize("chunk", [None, 4])
def test_grouped_round_matches_the_plain_loop_for_every_layer_type(regime, chunk, always_grouped):
    """With chunks of 4 the last chunk of task layers holds one client per task: it shares nothing, so it trains
    one by one, in the same round as grouped chunks."""
    spec, cfg = REGIMES[regime]
    want = simulate(spec, "loop", **cfg)
    got = simulate(spec, "fused", chunk=chunk, **cfg)
    # clients that share no layer train one by one (faster so); every other regime ran grouped
    assert bool(always_grouped) == (regime != "all_personal")
    assert_same_clients(want, got, atol=3e-6)


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_grouped_round_matches_the_fused_path_for_every_aggregator(name, always_grouped, monkeypatch):
    """FedAvg-like aggregators fold the factors as one GEMM; median and trimmed mean get them materialised (the
    outlier client included); FedProx's proximal term is not plain SGD, so it keeps the per-client path."""
    spec = LayerSpec.of(common="fc1", task="fc2", personal="fc3")
    aggs = {"common": {"name": name, **OPTIONS.get(name, {})}, "task": {"name": name, **OPTIONS.get(name, {})}}
    got = simulate(spec, "fused", chunk=4, aggregators=aggs)
    assert bool(always_grouped) == (name != "fedprox")
    monkeypatch.setattr(FusedMLP, "grouped_max_ratio", -1.0)  # the fused backend's per-client path
    want = simulate(spec, "fused", chunk=4, aggregators=aggs)
    assert_same_clients(want, got, atol=3e-6)


def test_a_frozen_layer_between_trained_ones_passes_gradients(always_grouped):
    spec = LayerSpec.of(common=["fc1", "fc3"], pretrained="fc2")
    want = simulate(spec, "loop", local_epochs=1)
    got = simulate(spec, "fused", local_epochs=1)
    assert always_grouped
    assert_same_clients(want, got, atol=3e-6)
    start = dict(mlp(SIZES, seed=1).named_parameters())
    assert torch.equal(got.client_state_dict("c0")["fc2.weight"], start["fc2.weight"].detach())


def test_a_lone_client_is_not_grouped(always_grouped):
    """A pooled client shares its weights with nobody: the per-client path, whatever the cost rule says."""
    from fedmtl import Client, Federation

    fed = outlier_federation()
    pooled = Federation([Client("pooled", "all", torch.cat([c.x_train for c in fed.clients]),
                                torch.cat([c.y_train for c in fed.clients]), fed.clients[0].x_test,
                                fed.clients[0].y_test)])
    simulate(LayerSpec.of(common=["fc1", "fc2", "fc3"]), "fused", pooled, local_epochs=1)
    assert not always_grouped


def test_fused_decides_by_the_corrections_cost():
    """The paper's face head at 7 steps of 16 rows pays (2% corrections); a pooled client's 690 steps do not."""
    face = FusedMLP(mlp([4096, 4096, 2048, 1024, 1]))
    assert correction_ratio(face.sizes, 7, 16) < 0.03
    assert face.grouped_pays(7, 16) and not face.grouped_pays(690, 16)
    assert not FusedMLP(mlp(SIZES)).grouped_pays(4, 8)  # tiny layers: corrections as big as the matmuls


def test_grouped_deltas_equal_per_client_training_at_the_backend():
    """Three clients, two groups for the middle layer, own base for the top: the factored deltas equal what the
    fused backend's per-client path moves, and the bases are left alone."""
    g = torch.Generator().manual_seed(3)
    backend = FusedMLP(mlp(SIZES))
    names = [n for pair in backend.layers for n in pair]
    shapes = dict(mlp(SIZES).named_parameters())
    group_of = {"fc1": torch.tensor([0, 0, 0]), "fc2": torch.tensor([1, 0, 1]), "fc3": torch.tensor([0, 1, 2])}
    bases = {n: torch.randn(int(group_of[n.split(".")[0]].max()) + 1, *shapes[n].shape, generator=g) * 0.3
             for n in names}
    groups = {n: group_of[n.split(".")[0]] for n in names}
    x, y = torch.randn(60, 10, generator=g), torch.randint(0, 3, (60,), generator=g)
    schedule = make_schedule(torch.tensor([20, 13, 27]), torch.tensor([0, 20, 33]), 8, 2, g)
    sgd = LocalSGD(lr=0.1, momentum=0.0, loss="cross_entropy", update=names)
    before = {n: t.clone() for n, t in bases.items()}
    deltas = backend.train_grouped(bases, groups, x, y, [(schedule, sgd)])
    stacked = {n: bases[n].index_select(0, groups[n]).clone() for n in names}
    backend.train(stacked, x, y, schedule, sgd)
    for n in names:
        assert torch.equal(bases[n], before[n])
        got = bases[n].index_select(0, groups[n]) + deltas.materialize(n)
        torch.testing.assert_close(got, stacked[n], rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_folding_factors_equals_folding_their_products(name):
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(5, 6, 4, generator=g), torch.randn(5, 6, 3, generator=g)
    left[2] *= 1e3  # an outlier client
    dense = torch.randn(5, 2, generator=g)
    weights = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0])
    products = torch.bmm(left.transpose(1, 2), right).reshape(5, -1)
    want = make_aggregator(name, **OPTIONS.get(name, {})).aggregate(torch.cat([products, dense], 1), weights)
    agg = make_aggregator(name, **OPTIONS.get(name, {}))
    agg.begin(14, weights)
    for start in (0, 2):  # two chunks of clients
        stop = 5 if start else 2
        agg.fold_factored(left[start:stop], right[start:stop], 0)
        agg.fold(dense[start:stop], 12)
    torch.testing.assert_close(agg.finish(), want, rtol=1e-5, atol=1e-4)


def test_factors_with_nan_and_grouped_divergence_are_refused(always_grouped):
    agg = make_aggregator("fedavg")
    agg.begin(12, torch.ones(2))
    left = torch.ones(2, 3, 4)
    left[1, 0, 0] = float("nan")
    with pytest.raises(DivergedError, match="1 of 2 client"):
        agg.fold_factored(left, torch.ones(2, 3, 3), 0)
    with pytest.raises(DivergedError, match="local training diverged"):
        simulate(LayerSpec.of(common=["fc1", "fc2"], task="fc3"), "fused", lr=1e6, rounds=1)


def test_grouped_chunks_are_sized_by_their_factors_not_a_model_copy(always_grouped):
    """The memory plan charges a grouped chunk member its factors, activations and personal layers (twice: the
    gathered copy and its delta), not a stacked copy of the whole model."""
    spec = LayerSpec.of(common="fc1", task="fc2", personal="fc3")
    sim = simulate(spec, "fused", rounds=1)
    steps = 2 * -(-max(c.num_train for c in sim.federation.clients) // 8)  # two local epochs, batch 8
    personal = 4 * (8 * 3 + 3)
    assert sim.plan.client == sim.backend.grouped_client_bytes(steps, 8) + 2 * personal


def test_evaluation_assembles_no_more_models_than_the_budget_holds(monkeypatch):
    """Grouped chunks are small (factors, not models), so a budget can train more clients at once than it can
    hold full models for; evaluation, which assembles each client's model, keeps to the models it holds."""
    from fedmtl.engine import MemoryPlan

    plan = MemoryPlan(1000, 100, 10, 0, clients=6, sampled=6, derived=False, model=300)
    assert (plan.chunk, plan.models) == (6, 3)
    sim = simulate(LayerSpec.of(common="fc1", task="fc2", personal="fc3"), "fused", rounds=1)
    sim.plan.models = 2
    widths = []
    real = FusedMLP.forward
    monkeypatch.setattr(FusedMLP, "forward", lambda self, params, x: widths.append(x.shape[0]) or real(self, params, x))
    sim.evaluate()
    assert max(widths) == 2 and sum(widths) == len(sim.federation)


def test_a_wide_head_groups_by_itself_and_matches_the_loop(monkeypatch):
    """No forcing: a head wide enough for grouping to pay (corrections ~5% of the matmuls) picks it on its own
    and still follows the plain loop (mtfl's layer types, BCE, partial batches)."""
    from fedmtl import Client, Federation

    g = torch.Generator().manual_seed(0)
    clients = []
    for i in range(8):
        x, xt = torch.randn(20 + i, 256, generator=g), torch.randn(6, 256, generator=g)
        clients.append(Client(f"c{i}", f"t{i % 2}", x, (x[:, :1] > 0).float(), xt, (xt[:, :1] > 0).float()))
    fed = Federation(clients)
    spec = LayerSpec.of(common=["fc1", "fc2"], task="fc3")
    calls = []
    real = FusedMLP.train_grouped
    monkeypatch.setattr(FusedMLP, "train_grouped", lambda self, *a: calls.append(1) or real(self, *a))
    sims = {}
    for backend in ("loop", "fused"):
        config = TrainConfig(rounds=2, local_epochs=1, batch_size=8, lr=0.05, momentum=0.0, loss="bce",
                             backend=backend)
        sims[backend] = Simulation(mlp([256, 256, 128, 1], seed=2), spec, fed, config)
        sims[backend].run(progress=False)
    assert len(calls) == 2 and sims["fused"].backend.grouped_pays(4, 8)  # one grouped chunk per round
    assert sims["fused"].plan.client < sims["fused"].plan.model  # sized by factors
    assert_same_clients(sims["loop"], sims["fused"], atol=3e-6)
