import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from fedmtl import (
    CheckpointError,
    ConfigError,
    LayerSpec,
    LayerType,
    Phase,
    Simulation,
    TrainConfig,
    mlp,
)
from fedmtl.engine import split_stem

SPEC = LayerSpec.of(common="fc1", task="fc2", personal="fc3")


def sim_for(federation, spec=SPEC, sizes=(10, 16, 8, 3), **cfg) -> Simulation:
    config = TrainConfig(**{"rounds": 3, "local_epochs": 2, "batch_size": 8, "lr": 0.05, "momentum": 0.0, **cfg})
    return Simulation(mlp(list(sizes), seed=1), spec, federation, config)


def torch_layout(sim: Simulation, store: dict) -> dict:
    return {n: sim.backend.from_native(n, t) for n, t in store.items()}


def test_aggregation_is_eq1_for_common_and_eq2_per_task(federation):
    sim = sim_for(federation)
    clients = torch.tensor([0, 1, 2, 3])  # tasks t0, t1, t0, t1
    sizes = sim.n_train[clients].double()
    params = sim._assemble(clients, copy=True)
    for i in range(4):
        for n in params:
            params[n][i].fill_(float(i + 1))
    common_before = {n: t.clone() for n, t in sim.common.items()}
    sim.server.aggregate(clients, params)
    sim.personal.scatter(clients, params)
    # eq. (1): common = global + sum_m N_m (w_m - global) / sum_m N_m  -> the sample-weighted mean of client values
    expected_common = float((sizes * torch.tensor([1.0, 2, 3, 4], dtype=torch.float64)).sum() / sizes.sum())
    for n, t in sim.common.items():
        assert torch.allclose(t, torch.full_like(t, expected_common), atol=1e-5), n
        assert not torch.equal(t, common_before[n])
    # eq. (2): each task's layers average only its own group's clients
    for task, members in ((0, [0, 2]), (1, [1, 3])):
        n_m = sizes[members]
        value = float((n_m * torch.tensor([m + 1.0 for m in members], dtype=torch.float64)).sum() / n_m.sum())
        for n, t in sim.task.items():
            assert torch.allclose(t[task], torch.full_like(t[task], value), atol=1e-5), (n, task)
    # personal: written back to exactly the sampled clients, never averaged
    assert sim.personal.trained == [0, 1, 2, 3]
    for n, t in sim.personal.gather(torch.arange(6)).items():
        for i in range(4):
            assert (t[i] == i + 1).all()
        assert torch.equal(t[4], sim.personal.initial[n])


class Recorder:
    """An aggregator that remembers everything it was given."""

    def __init__(self):
        self.seen = []
        self.proximal_mu = 0.0
        self.name = "recorder"

    def begin(self, size, weights):
        self.size = size

    def fold(self, updates, offset=0):
        self.seen.append((offset, updates.clone()))

    def finish(self):
        return torch.zeros(self.size)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_personal_parameters_never_reach_an_aggregator(federation):
    sim = sim_for(federation)
    sim.agg_common = Recorder()
    sim.agg_task = [Recorder(), Recorder()]
    sentinel = 1234.5
    sim.personal.scatter(torch.arange(6), {n: torch.full((6, *t.shape), sentinel)
                                           for n, t in sim.personal.initial.items()})
    sim.run(progress=False)
    n_common = sum(t.numel() for t in sim.common.values())
    n_task = sum(t[0].numel() for t in sim.task.values())
    for rec, size in ((sim.agg_common, n_common), *((r, n_task) for r in sim.agg_task)):
        assert rec.seen and all(off + u.shape[1] <= size for off, u in rec.seen)
        assert max(off + u.shape[1] for off, u in rec.seen) == size  # tiles cover the scope, nothing more
        for _, u in rec.seen:
            assert not torch.isclose(u.abs(), torch.tensor(sentinel), rtol=0.01).any()


def test_frozen_pretrained_layers_never_change(federation):
    # stem (leading frozen layers, computed once) and a frozen layer in the middle of the head
    spec = LayerSpec.of(pretrained=["fc1", "fc3"], common="fc2", personal="fc4")
    model = mlp([10, 12, 12, 12, 3], seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sim = Simulation(model, spec, federation, TrainConfig(rounds=2, local_epochs=1, batch_size=8, lr=0.1))
    assert sim.stem is not None and "fc3.weight" in sim.frozen
    sim.run(progress=False)
    state = sim.client_state_dict("c2")
    assert torch.equal(state["fc3.weight"], before["fc3.weight"])
    assert torch.equal(sim.stem.fc1.weight, before["fc1.weight"])
    assert not torch.equal(state["fc2.weight"], before["fc2.weight"])


def test_split_stem_keeps_parameterless_layers_before_first_trainable():
    model = mlp([4, 4, 4, 2])
    types = {n: LayerType.PRETRAINED if n.startswith("fc1") else LayerType.COMMON for n, _ in model.named_parameters()}
    stem, head = split_stem(model, types)
    assert list(dict(stem.named_children())) == ["fc1", "relu1"]
    assert list(dict(head.named_children()))[0] == "fc2"


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("aggregator", ["fedavg", "fedprox"])
def test_vectorised_backends_match_the_plain_loop(federation, momentum, aggregator):
    """Same schedule, same maths: stacked and vmap runs follow the per-client loop within float tolerance."""
    aggs = {"common": {"name": aggregator, **({"mu": 0.5} if aggregator == "fedprox" else {})}, "task": "fedavg"}
    results = {}
    for backend in ("loop", "stacked", "vmap"):
        sim = sim_for(federation, backend=backend, momentum=momentum, clients_per_task=2, aggregators=aggs,
                      keep_optimizer_state=True)
        history = sim.run(progress=False)
        results[backend] = (sim.client_state_dict("c3"), [h["accuracy"] for h in history])
    ref_state, ref_acc = results["loop"]
    for backend in ("stacked", "vmap"):
        state, acc = results[backend]
        assert acc == ref_acc
        for n in ref_state:
            assert torch.allclose(state[n], ref_state[n], atol=2e-5, rtol=1e-4), (backend, n)


def test_generic_module_runs_through_vmap(federation):
    class TwoTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(10, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.body(x)))

    sim = Simulation(TwoTower(), LayerSpec.of(common="body", personal="head"), federation,
                     TrainConfig(rounds=2, local_epochs=1, batch_size=8, lr=0.1))
    assert sim.backend.name == "vmap"
    assert sim.run(progress=False)[-1]["accuracy"] > 0


def test_sampling_k_clients_per_task(federation):
    sim = sim_for(federation, clients_per_task=2)
    for _ in range(5):
        chosen = sim.sample_clients()
        tasks = federation.task_index[chosen]
        assert (tasks == 0).sum() == 2 and (tasks == 1).sum() == 2


def test_deterministic_for_a_seed(federation):
    a = sim_for(federation, seed=3, clients_per_task=2).run(progress=False)
    b = sim_for(federation, seed=3, clients_per_task=2).run(progress=False)
    c = sim_for(federation, seed=4, clients_per_task=2).run(progress=False)
    assert a == b
    assert a != c


def test_phases_update_only_their_layer_types(federation):
    sim = sim_for(federation, phases=(Phase(1, ("personal",)),))
    common = {n: t.clone() for n, t in sim.common.items()}
    sim.run(progress=False)
    assert all(torch.equal(common[n], sim.common[n]) for n in common)
    personal = sim.personal.gather(torch.tensor([0, 1]))["fc3.weight"]
    assert not torch.equal(personal[0], personal[1])


def test_resume_is_bit_identical(federation, tmp_path):
    cfg = dict(rounds=4, clients_per_task=2, momentum=0.9, keep_optimizer_state=True,
               aggregators={"common": {"name": "fedadam"}, "task": "fedyogi"})
    straight = sim_for(federation, **cfg)
    straight.run(progress=False)

    first = Simulation(mlp([10, 16, 8, 3], seed=1), SPEC, federation,
                       TrainConfig(local_epochs=2, batch_size=8, lr=0.05, **cfg), checkpoint_dir=tmp_path)
    first.run(rounds=2, progress=False)
    resumed = Simulation(mlp([10, 16, 8, 3], seed=1), SPEC, federation,
                         TrainConfig(local_epochs=2, batch_size=8, lr=0.05, **cfg), checkpoint_dir=tmp_path)
    assert resumed.round_index == 2
    resumed.run(progress=False)
    assert resumed.history == straight.history
    for store in ("common", "task"):
        for n, t in getattr(straight, store).items():
            assert torch.equal(getattr(resumed, store)[n], t), (store, n)
    everyone = torch.arange(len(federation))
    for store in ("personal", "buffers"):
        assert getattr(resumed, store).trained == getattr(straight, store).trained
        for n, t in getattr(straight, store).gather(everyone).items():
            assert torch.equal(getattr(resumed, store).gather(everyone)[n], t), (store, n)


def test_killed_process_resumes_to_identical_metrics(federation, tmp_path):
    """A real SIGKILL between rounds: the resumed run ends exactly where an uninterrupted one does."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from conftest import make_federation
        from fedmtl import LayerSpec, Simulation, TrainConfig, mlp
        spec = LayerSpec.of(common="fc1", task="fc2", personal="fc3")
        cfg = TrainConfig(rounds=50, local_epochs=2, batch_size=8, lr=0.05, clients_per_task=2, momentum=0.5)
        sim = Simulation(mlp([10, 16, 8, 3], seed=1), spec, make_federation(), cfg, checkpoint_dir={str(tmp_path)!r})
        while sim.round_index < cfg.rounds:
            sim.run(rounds=sim.round_index + 1, progress=False)
            print(sim.round_index, flush=True)
            time.sleep(0.05)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if int(line) >= 3:
                proc.kill()
                break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode != 0
    cfg = TrainConfig(rounds=6, local_epochs=2, batch_size=8, lr=0.05, clients_per_task=2, momentum=0.5)
    resumed = Simulation(mlp([10, 16, 8, 3], seed=1), SPEC, federation, cfg, checkpoint_dir=tmp_path)
    assert 3 <= resumed.round_index < 6
    resumed.run(progress=False)
    straight = Simulation(mlp([10, 16, 8, 3], seed=1), SPEC, federation, cfg)
    straight.run(progress=False)
    assert resumed.history == straight.history


def test_checkpoint_of_another_config_is_refused(federation, tmp_path):
    sim_a = Simulation(mlp([10, 16, 8, 3], seed=1), SPEC, federation, TrainConfig(rounds=1, lr=0.05),
                       checkpoint_dir=tmp_path)
    sim_a.run(progress=False)
    with pytest.raises(CheckpointError, match="different config"):
        Simulation(mlp([10, 16, 8, 3], seed=1), SPEC, federation, TrainConfig(rounds=1, lr=0.07),
                   checkpoint_dir=tmp_path)


def test_corrupt_checkpoint_is_a_clear_error(federation, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        Simulation(mlp([10, 16, 8, 3], seed=1), SPEC, federation, TrainConfig(rounds=1), checkpoint_dir=tmp_path)


def test_evaluation_uses_each_clients_own_model(federation):
    sim = sim_for(federation)
    sim.run(progress=False)
    metrics = sim.evaluate()
    # recompute client c4's accuracy from its exported state with a plain module
    model = mlp([10, 16, 8, 3])
    model.load_state_dict(sim.client_state_dict("c4"))
    client = federation.clients[4]
    acc = (model(client.x_test).argmax(1) == client.y_test).float().mean().item() * 100
    assert metrics["per_client"]["c4"] == pytest.approx(acc)
    assert set(metrics["per_task"]) == {"t0", "t1"}


def test_ditto_global_model_follows_fedavg_and_personal_copies_are_used(federation):
    spec = LayerSpec.of(common=["fc1", "fc2", "fc3"])
    fedavg = sim_for(federation, spec=spec, clients_per_task=2)
    fedavg.run(progress=False)
    ditto = sim_for(federation, spec=spec, clients_per_task=2, ditto_lambda=0.5)
    history = ditto.run(progress=False)
    for n, t in fedavg.common.items():  # the global half is untouched by the personal copies
        assert torch.allclose(ditto.common[n], t, atol=1e-6), n
    personal = ditto.client_state_dict("c1")
    global_w = ditto.backend.from_native("fc1.weight", ditto.common["fc1.weight"])
    assert not torch.allclose(personal["fc1.weight"], global_w)
    model = mlp([10, 16, 8, 3])
    model.load_state_dict(personal)  # evaluation scores each client's personal model
    client = federation.clients[1]
    acc = (model(client.x_test).argmax(1) == client.y_test).float().mean().item() * 100
    assert history[-1]["per_client"]["c1"] == pytest.approx(acc)


@pytest.mark.parametrize("backend", ["stacked", "vmap"])
def test_ditto_backends_match_the_loop(federation, backend):
    spec = LayerSpec.of(common=["fc1", "fc2"], task="fc3")
    states = {}
    for name in ("loop", backend):
        sim = sim_for(federation, spec=spec, backend=name, ditto_lambda=0.3, momentum=0.5, clients_per_task=2)
        sim.run(progress=False)
        states[name] = sim.client_state_dict("c5")
    for n, t in states["loop"].items():
        assert torch.allclose(states[backend][n], t, atol=2e-5, rtol=1e-4), n


def test_ditto_with_large_lambda_keeps_personal_near_global(federation):
    spec = LayerSpec.of(common=["fc1", "fc2", "fc3"])
    sim = sim_for(federation, spec=spec, ditto_lambda=19.0, lr=0.05, rounds=2)
    sim.run(progress=False)
    loose = sim_for(federation, spec=spec, ditto_lambda=0.01, lr=0.05, rounds=2)
    loose.run(progress=False)

    def gap(s):
        own = s.shadow.gather(torch.arange(len(federation)), ["fc1.weight"])["fc1.weight"]
        return float((own - s.common["fc1.weight"]).abs().mean())

    assert gap(sim) < gap(loose)


def test_ditto_refuses_personal_layers(federation):
    with pytest.raises(ConfigError, match="without personal layers"):
        sim_for(federation, ditto_lambda=0.1)


def test_divergence_is_a_clear_error_naming_the_round(federation):
    from fedmtl import DivergedError

    sim = sim_for(federation, spec=LayerSpec.of(personal=["fc1", "fc2", "fc3"]), lr=1e30)
    with pytest.raises(DivergedError, match="round 1: local training diverged"):
        sim.run(progress=False)
