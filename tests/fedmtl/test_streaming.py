"""Streamed rounds (chunks of clients folded into the aggregators) equal the all-at-once round; per-client state
exists only for clients that trained; the memory budget and the device are honoured."""

from __future__ import annotations

import pytest
import torch

from fedmtl import (
    AGGREGATORS,
    Client,
    ConfigError,
    Federation,
    LayerSpec,
    Simulation,
    TrainConfig,
    make_aggregator,
    mlp,
)
from fedmtl.aggregators import coordinate_median, trimmed_mean, weighted_mean
from tests.conftest import assert_same_clients

OPTIONS = {"fedprox": {"mu": 0.3}, "trimmed_mean": {"beta": 0.2}, "fedadam": {"lr": 0.05},
           "fedyogi": {"lr": 0.05}}


def tiles(updates: torch.Tensor, chunk: int, splits: tuple[int, ...]):
    """(rows, offset) tiles: clients in chunks of ``chunk``, coordinates cut at ``splits``."""
    cuts = [0, *splits, updates.shape[1]]
    for start in range(0, updates.shape[0], chunk):
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            yield updates[start:start + chunk, lo:hi], lo


def with_outlier(n: int, p: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    updates = torch.randn(n, p, generator=g)
    updates[n // 2] *= 1e4  # one client far off: median and trimmed mean must ignore it
    return updates


@pytest.mark.parametrize("name", list(AGGREGATORS))
@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_folding_tiles_equals_one_matrix(name, chunk):
    """Any chunking of clients and any cut of coordinates gives the all-at-once step, over two rounds (so the
    server optimisers' moments are checked too)."""
    whole, streamed = make_aggregator(name, **OPTIONS.get(name, {})), make_aggregator(name, **OPTIONS.get(name, {}))
    weights = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0])
    for seed in (0, 1):
        updates = with_outlier(7, 23, seed)
        want = whole.aggregate(updates, weights)
        streamed.begin(updates.shape[1], weights)
        for tile, offset in tiles(updates, chunk, (5, 6, 17)):
            streamed.fold(tile, offset)
        torch.testing.assert_close(streamed.finish(), want, rtol=1e-5, atol=1e-6)
    if name in ("median", "trimmed_mean"):  # the outlier (x1e4) does not pull the robust step
        assert float(want.abs().max()) < 10


def test_all_at_once_matches_the_textbook_formulas():
    updates, weights = with_outlier(7, 11, 3), torch.arange(1.0, 8.0)
    torch.testing.assert_close(make_aggregator("fedavg").aggregate(updates, weights), weighted_mean(updates, weights))
    torch.testing.assert_close(make_aggregator("median").aggregate(updates, weights), coordinate_median(updates))
    torch.testing.assert_close(make_aggregator("trimmed_mean", beta=0.2).aggregate(updates, weights),
                               trimmed_mean(updates, 0.2))


def test_median_reduces_in_coordinate_blocks(monkeypatch):
    """The sort runs on slices of the store, never on the whole [n, P] matrix at once."""
    from fedmtl import aggregators

    updates = with_outlier(5, 50, 0)
    want = coordinate_median(updates)
    sorted_widths = []
    real_sort = torch.sort

    def spy(t, *args, **kwargs):
        sorted_widths.append(t.shape[1])
        return real_sort(t, *args, **kwargs)

    monkeypatch.setattr(aggregators.torch, "sort", spy)
    agg = make_aggregator("median")
    monkeypatch.setattr(agg, "BLOCK_BYTES", 12 * 5 * 8)  # 8 coordinates of 5 clients per block
    torch.testing.assert_close(agg.aggregate(updates, torch.ones(5)), want)
    assert max(sorted_widths) == 8 and len(sorted_widths) == 7


def test_unfinished_round_is_refused():
    agg = make_aggregator("fedavg")
    agg.begin(4, torch.ones(2))
    agg.fold(torch.ones(2, 3))
    with pytest.raises(Exception, match="folded 6 of 8"):
        agg.finish()
    agg.begin(4, torch.ones(2))
    with pytest.raises(Exception, match="falls outside the round"):
        agg.fold(torch.ones(3, 4))


# ------------------------------------------------------------------ whole rounds on small federations


def outlier_federation(clients: int = 6, tasks: int = 2) -> Federation:
    """Unequal clients; client 1's inputs are scaled up, so its update is an outlier."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(clients):
        n = 20 + 7 * i
        w = torch.randn(10, 3, generator=g)
        x = torch.randn(n, 10, generator=g) * (30.0 if i == 1 else 1.0)
        xt = torch.randn(9 + 4 * i, 10, generator=g)
        out.append(Client(f"c{i}", f"t{i % tasks}", x, (x @ w).argmax(1), xt, (xt @ w).argmax(1)))
    return Federation(out)


REGIMES = {
    "common_task_personal": (LayerSpec.of(common="fc1", task="fc2", personal="fc3"), {}),
    "all_common": (LayerSpec.of(common=["fc1", "fc2", "fc3"]), {}),
    "all_task": (LayerSpec.of(task=["fc1", "fc2", "fc3"]), {}),
    "all_personal": (LayerSpec.of(personal=["fc1", "fc2", "fc3"]), {}),
    "fedrep": (LayerSpec.of(common=["fc1", "fc2"], personal="fc3"),
               {"phases": ({"epochs": 2, "layers": ["personal"]}, {"epochs": 1, "layers": ["common"]})}),
    "ditto": (LayerSpec.of(common=["fc1", "fc2"], task="fc3"), {"ditto_lambda": 0.3}),
    "fedprox_momentum": (LayerSpec.of(common="fc1", task="fc2", personal="fc3"),
                         {"aggregators": {"common": {"name": "fedprox", "mu": 0.5}, "task": "fedavg"},
                          "momentum": 0.5, "keep_optimizer_state": True}),
}


def simulate(spec, chunk, rounds=2, federation=None, **cfg) -> Simulation:
    config = TrainConfig(**{"rounds": rounds, "local_epochs": 2, "batch_size": 8, "lr": 0.02, "momentum": 0.0,
                            "clients_per_task": 3, "backend": "stacked", **cfg})
    sim = Simulation(mlp([10, 16, 8, 3], seed=1), spec, federation or outlier_federation(), config)
    if chunk != "all":
        sim.chunk_size = chunk
    sim.run(progress=False)
    return sim


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("chunk", [1, 2])
def test_streamed_round_equals_all_at_once_for_every_regime_shape(regime, chunk):
    spec, cfg = REGIMES[regime]
    whole = simulate(spec, "all", **cfg)
    assert whole.chunk_size == 6  # the default budget holds the whole round: one chunk
    assert_same_clients(whole, simulate(spec, chunk, **cfg), atol=2e-6)


@pytest.mark.parametrize("name", list(AGGREGATORS))
@pytest.mark.parametrize("chunk", [1, 2])
def test_streamed_round_equals_all_at_once_for_every_aggregator(name, chunk):
    spec = LayerSpec.of(common="fc1", task="fc2", personal="fc3")
    aggs = {"common": {"name": name, **OPTIONS.get(name, {})}, "task": {"name": name, **OPTIONS.get(name, {})}}
    whole = simulate(spec, "all", aggregators=aggs)
    assert_same_clients(whole, simulate(spec, chunk, aggregators=aggs), atol=2e-6)


def test_memory_budget_sets_the_chunk_and_too_small_a_budget_names_the_minimum():
    spec = REGIMES["common_task_personal"][0]
    probe = simulate(spec, "all", rounds=1)
    plan = probe.plan
    assert plan.client == 4 * sum(p.numel() for p in mlp([10, 16, 8, 3]).parameters()) + 4 * (16 * 8 + 8)
    two = simulate(spec, "all", rounds=1, memory_budget=plan.fixed + 2 * plan.client + 6 * plan.state)
    assert two.chunk_size == 2 and not two.plan.on_disk
    with pytest.raises(ConfigError, match=rf"memory_budget 100 bytes is too small for one client: at least "
                                          rf"{plan.fixed + plan.client} bytes"):
        simulate(spec, "all", rounds=1, memory_budget=100)
    with pytest.raises(ConfigError, match="memory_budget"):
        TrainConfig(memory_budget=0)


# ------------------------------------------------------------------ per-client state on demand


def test_never_sampled_clients_are_untouched_and_cost_no_memory():
    fed = outlier_federation(clients=40, tasks=4)
    spec = LayerSpec.of(common="fc1", personal=["fc2", "fc3"])
    sim = Simulation(mlp([10, 16, 8, 3], seed=1), spec, fed,
                     TrainConfig(rounds=1, local_epochs=1, batch_size=8, lr=0.02, momentum=0.9,
                                 keep_optimizer_state=True, clients_per_task=1, backend="stacked"))
    assert len(sim.personal) == 0 and sim.personal.nbytes == 0 and sim.buffers.nbytes == 0
    initial = sim.client_state_dict("c0")
    sim.run(progress=False)
    sampled = sim.personal.trained
    assert sorted(fed.task_index[sampled].tolist()) == [0, 1, 2, 3]  # one sampled client per task group
    assert sim.buffers.trained == sampled
    assert sim.personal.nbytes == len(sampled) * sim.personal.client_bytes  # 4 of 40 clients hold state
    assert sim.buffers.nbytes == len(sampled) * sim.buffers.client_bytes
    for i, client in enumerate(fed.clients):
        state = sim.client_state_dict(client.id)
        for n in ("fc2.weight", "fc3.bias"):
            assert torch.equal(state[n], initial[n]) == (i not in sampled), (client.id, n)


def test_on_disk_client_state_matches_memory_and_resumes_after_a_killed_round(tmp_path):
    spec, cfg = REGIMES["fedprox_momentum"]
    in_memory = simulate(spec, 2, rounds=3, **cfg)
    probe = simulate(spec, 2, rounds=1, **cfg).plan
    budget = probe.fixed + 2 * probe.client  # room for a chunk of two, none for every client's state
    config = TrainConfig(rounds=3, local_epochs=2, batch_size=8, lr=0.02, momentum=0.5, clients_per_task=3,
                         backend="stacked", memory_budget=budget, **{k: v for k, v in cfg.items() if k != "momentum"})

    def fresh() -> Simulation:
        return Simulation(mlp([10, 16, 8, 3], seed=1), spec, outlier_federation(), config, checkpoint_dir=tmp_path)

    first = fresh()
    assert first.plan.on_disk and first.chunk_size == 2 and first.personal.nbytes == 0
    first.run(rounds=2, progress=False)
    files = sorted(p.name for p in (tmp_path / "clients" / "personal").glob("*.pt"))
    assert files == sorted(f"{c}.{v}.pt" for c, v in first.personal.state_dict()["versions"].items())
    first.step()  # a third round whose checkpoint is never written: the process "dies" here
    assert len(list((tmp_path / "clients" / "personal").glob("*.pt"))) > len(files)
    resumed = fresh()
    assert resumed.round_index == 2
    assert sorted(p.name for p in (tmp_path / "clients" / "personal").glob("*.pt")) == files  # stale writes gone
    resumed.run(progress=False)
    assert_same_clients(in_memory, resumed, atol=2e-6)


def test_evaluation_pads_test_sets_per_chunk_only():
    sim = simulate(REGIMES["common_task_personal"][0], "all", rounds=1)
    x, _, valid = sim.test_batch(torch.tensor([0, 1]))
    assert x.shape[1] == max(sim.n_test[:2]) < int(sim.n_test.max())  # not the federation's longest test set
    assert valid.sum(1).tolist() == sim.n_test[:2].tolist()
    chunked = sim.evaluate(chunk=1)
    assert chunked == sim.evaluate(chunk=64)


# ------------------------------------------------------------------ devices


def test_device_setting_is_validated():
    with pytest.raises(ConfigError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        TrainConfig(device="gpu")
    assert TrainConfig(device="cuda:1").device == "cuda:1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU; the error is for machines without")
def test_asking_for_a_missing_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
        simulate(REGIMES["all_common"][0], "all", rounds=1, device="cuda")


def test_auto_device_runs_on_what_is_there():
    sim = simulate(REGIMES["common_task_personal"][0], "all", rounds=1, device="auto")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert sim.device.type == want and sim.x_train.device.type == want
    assert all(t.device.type == want for t in sim.common.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the CUDA run is skipped")
@pytest.mark.parametrize("backend", ["stacked", "fused"])
def test_cuda_run_matches_cpu(backend):
    spec, cfg = REGIMES["fedprox_momentum"]
    cpu = simulate(spec, 2, backend=backend, **cfg)
    gpu = simulate(spec, 2, backend=backend, device="cuda", **cfg)
    assert all(t.device.type == "cuda" for t in gpu.common.values())
    for client in cpu.federation.clients:
        want, got = cpu.client_state_dict(client.id), gpu.client_state_dict(client.id)
        for n in want:
            torch.testing.assert_close(got[n], want[n], rtol=1e-3, atol=1e-4)
