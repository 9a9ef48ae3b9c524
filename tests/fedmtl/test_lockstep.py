"""Runs as a batch dimension: simulations trained in lockstep give exactly what each gives alone."""

from __future__ import annotations

import pytest
import torch

from fedmtl import Client, Federation, LayerSpec, Lockstep, Phase, Simulation, TrainConfig, mlp
from tests.conftest import make_federation

SIZES = (10, 16, 8, 3)
BASE = {"rounds": 4, "local_epochs": 2, "batch_size": 8, "lr": 0.05, "momentum": 0.0}

# Layer plans of the HAR regimes on a 3-layer model (benchmark/regimes.py), plus a task-layer one.
PLANS = {
    "fedavg": LayerSpec.of(common=["fc1", "fc2", "fc3"]),
    "separate": LayerSpec.of(personal=["fc1", "fc2", "fc3"]),
    "mtfl": LayerSpec.of(common=["fc1", "fc2"], personal="fc3"),
    "lg_fedavg": LayerSpec.of(personal="fc1", common=["fc2", "fc3"]),
    "tasks": LayerSpec.of(common="fc1", task="fc2", personal="fc3"),
}


def _pooled(federation: Federation) -> Federation:
    cs = federation.clients
    return Federation([Client("pooled", "pooled", torch.cat([c.x_train for c in cs]),
                              torch.cat([c.y_train for c in cs]), torch.cat([c.x_test for c in cs]),
                              torch.cat([c.y_test for c in cs]))])


def _sim(plan: str, federation: Federation, checkpoint_dir=None, **cfg) -> Simulation:
    config = TrainConfig(**{**BASE, **cfg})
    return Simulation(mlp(list(SIZES), seed=config.seed), PLANS[plan], federation, config,
                      checkpoint_dir=checkpoint_dir)


def _outcome(sim: Simulation) -> tuple[list, dict]:
    history = [(h["round"], h["accuracy"], h["client_mean_accuracy"]) for h in sim.history]
    return history, {n: t.clone() for n, t in {**sim.common, **sim.task}.items()}


def _assert_same(alone: Simulation, together: Simulation) -> None:
    h1, p1 = _outcome(alone)
    h2, p2 = _outcome(together)
    assert len(h1) == len(h2) == alone.config.rounds
    for a, b in zip(h1, h2, strict=True):
        assert a[0] == b[0]
        assert a[1] == pytest.approx(b[1], abs=1e-6) and a[2] == pytest.approx(b[2], abs=1e-6)
    for n in p1:
        torch.testing.assert_close(p1[n], p2[n], atol=1e-6, rtol=0)
    for i in range(len(alone.federation)):
        for n, t in alone.client_state_dict(alone.federation.clients[i].id).items():
            torch.testing.assert_close(t, together.client_state_dict(together.federation.clients[i].id)[n],
                                       atol=1e-6, rtol=0)


def _check(specs: list[tuple[str, Federation, dict]]) -> Lockstep:
    """Each (plan, federation, config changes) alone and all of them in one lockstep: the same results."""
    alone = [_sim(plan, fed, **cfg) for plan, fed, cfg in specs]
    for sim in alone:
        sim.run(progress=False)
    together = [_sim(plan, fed, **cfg) for plan, fed, cfg in specs]
    lock = Lockstep(together)
    assert lock.run(BASE["rounds"]) == {}
    for a, b in zip(alone, together, strict=True):
        _assert_same(a, b)
    return lock


def test_har_regimes_and_seeds_in_one_stack_match_running_alone():
    fed = make_federation()
    specs = [(plan, fed, {"seed": seed}) for plan in ("fedavg", "separate", "mtfl", "lg_fedavg", "tasks")
             for seed in (0, 1)]
    specs += [("fedavg", _pooled(fed), {"seed": seed}) for seed in (0, 1)]  # centralized_joint
    lock = _check(specs)
    # one backend call per round trained all 12 runs (their data is one tensor: the pooled rows are the same)
    assert lock.calls == BASE["rounds"]
    assert lock.data[lock.family[0]].x.shape[0] == sum(c.num_train for c in fed.clients)


@pytest.mark.parametrize("aggregator", [
    {"name": "fedprox", "mu": 0.1}, {"name": "fedadam", "lr": 0.05}, {"name": "fedyogi", "lr": 0.05},
    {"name": "median"}, {"name": "trimmed_mean", "beta": 0.2},
])
def test_aggregators_match_running_alone(aggregator):
    fed = make_federation()
    aggs = {"common": aggregator, "task": aggregator}
    specs = [("tasks", fed, {"seed": s, "aggregators": aggs}) for s in (0, 1)]
    specs += [("mtfl", fed, {"seed": 2})]  # a plain FedAvg run in the same stack (mu = 0 for it)
    _check(specs)


def test_ditto_fedprox_grid_and_fedrep_phases_match_running_alone():
    fed = make_federation()
    fedrep = (Phase(2, ("personal",)), Phase(1, ("common",)))
    specs = [("fedavg", fed, {"seed": 0, "ditto_lambda": lam}) for lam in (0.1, 1.0)]
    specs += [("fedavg", fed, {"seed": 0, "aggregators": {"common": {"name": "fedprox", "mu": mu}}})
              for mu in (0.01, 0.5)]
    specs += [("mtfl", fed, {"seed": s, "phases": fedrep}) for s in (0, 1)]
    specs += [("mtfl", fed, {"seed": 0, "lr": lr}) for lr in (0.02, 0.1)]  # two lrs: two calls, one lockstep
    _check(specs)


@pytest.mark.parametrize("keep", [False, True])
def test_momentum_matches_running_alone(keep):
    fed = make_federation()
    specs = [("mtfl", fed, {"seed": s, "momentum": 0.9, "keep_optimizer_state": keep}) for s in (0, 1)]
    specs += [("tasks", fed, {"seed": 0, "momentum": 0.9, "keep_optimizer_state": keep})]
    _check(specs)


@pytest.mark.parametrize("backend", ["fused", "vmap"])
def test_other_backends_match_running_alone(backend):
    fed = make_federation()
    _check([("mtfl", fed, {"seed": s, "backend": backend}) for s in (0, 1)]
           + [("separate", fed, {"seed": 0, "backend": backend})])


def test_sampling_chunks_and_other_data_match_running_alone():
    fed, other = make_federation(), make_federation(clients=4, seed=5)
    specs = [("tasks", fed, {"seed": s, "clients_per_task": 2}) for s in (0, 1)]
    specs += [("mtfl", other, {"seed": 0})]  # other data: its rows are appended to the shared tensor
    alone = [_sim(plan, f, **cfg) for plan, f, cfg in specs]
    for sim in alone:
        sim.run(progress=False)
    together = [_sim(plan, f, **cfg) for plan, f, cfg in specs]
    together[0].chunk_size = 1  # one run streams its clients one by one, the others in one chunk
    lock = Lockstep(together)
    lock.run(BASE["rounds"])
    for a, b in zip(alone, together, strict=True):
        _assert_same(a, b)


def test_a_diverging_run_is_recorded_and_the_others_go_on():
    fed = make_federation()
    together = [_sim("mtfl", fed, seed=0), _sim("mtfl", fed, seed=1, lr=1e6), _sim("mtfl", fed, seed=2)]
    lock = Lockstep(together)
    failed = lock.run(BASE["rounds"])
    assert list(failed) == [1] and "diverged" in str(failed[1])
    for i in (0, 2):
        alone = _sim("mtfl", fed, seed=i)
        alone.run(progress=False)
        _assert_same(alone, together[i])


def test_lockstep_checkpoints_resume_to_the_same_result(tmp_path):
    fed = make_federation()
    specs = [("mtfl", fed, {"seed": 0}), ("tasks", fed, {"seed": 1, "momentum": 0.9, "keep_optimizer_state": True})]
    first = [_sim(p, fed, tmp_path / str(i), **c) for i, (p, _, c) in enumerate(specs)]
    Lockstep(first).run(2)
    first[0].run(3, progress=False)  # runs may resume from different rounds
    resumed = [_sim(p, fed, tmp_path / str(i), **c) for i, (p, _, c) in enumerate(specs)]
    assert [s.round_index for s in resumed] == [3, 2]
    Lockstep(resumed).run(BASE["rounds"])
    for (p, _, c), sim in zip(specs, resumed, strict=True):
        alone = _sim(p, fed, **c)
        alone.run(progress=False)
        _assert_same(alone, sim)


def test_chunks_on_the_grouped_path_train_alone_inside_a_lockstep(monkeypatch):
    """Fused runs whose chunks pay for the grouped path (forced here: tiny models never do) fold those chunks
    themselves; a run whose chunks do not (all personal) still trains in the shared call. Same results."""
    from fedmtl.fused import FusedMLP

    monkeypatch.setattr(FusedMLP, "grouped_max_ratio", float("inf"))
    grouped = []
    real = FusedMLP.train_grouped
    monkeypatch.setattr(FusedMLP, "train_grouped", lambda self, *a, **k: grouped.append(1) or real(self, *a, **k))
    fed = make_federation()
    _check([("mtfl", fed, {"backend": "fused", "seed": 0}), ("tasks", fed, {"backend": "fused", "seed": 1}),
                   ("separate", fed, {"backend": "fused", "seed": 2})])
    assert grouped  # the grouped path ran, alone and inside the lockstep
