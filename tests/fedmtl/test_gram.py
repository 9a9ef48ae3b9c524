"""The input layer through each client's Gram matrix (fedmtl.gram): the same SGD as the plain loop, chosen per
client from its sizes only, so a client trains the same alone and in any stack."""

from __future__ import annotations

import pytest
import torch

from fedmtl import Client, Federation, LayerSpec, Lockstep, Simulation, TrainConfig, mlp
from fedmtl.backends import LocalSGD, StackedMLP
from fedmtl.gram import MAX_ROWS, GramCache, client_spans, pays
from fedmtl.schedule import make_schedule

SIZES = [48, 8, 6, 3]  # a wide input layer over few rows per client: where the Gram path pays
BATCH, EPOCHS = 4, 3


def wide_federation(big: int = 0) -> Federation:
    """Six small clients in two tasks (9-14 rows each, partial last batches) and, with ``big``, a client whose
    rows make the Gram path too dear, so a round's stack mixes both paths."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(SIZES[0], SIZES[-1], generator=g)
    sizes = [9, 14, 11, 12, 10, 13] + ([big] if big else [])
    clients = []
    for i, n in enumerate(sizes):
        x, xt = torch.randn(n, SIZES[0], generator=g), torch.randn(6, SIZES[0], generator=g)
        clients.append(Client(f"c{i}", "ab"[i % 2], x, (x @ w).argmax(1), xt, (xt @ w).argmax(1)))
    return Federation(clients)


def simulate(fed: Federation, backend: str, **cfg) -> tuple[Simulation, list[float]]:
    config = TrainConfig(**{"rounds": 3, "local_epochs": EPOCHS, "batch_size": BATCH, "lr": 0.05, "momentum": 0.0,
                            "backend": backend, **cfg})
    sim = Simulation(mlp(SIZES, seed=2), LayerSpec.of(common="fc1", task="fc2", personal="fc3"), fed, config)
    return sim, [h["accuracy"] for h in sim.run(progress=False)]


def steps_of(rows: int) -> int:
    return EPOCHS * -(-rows // BATCH)


def test_the_rule_takes_har_clients_and_leaves_pooled_ones():
    """The paper's HAR model: ~280 windows per subject take it (2.3x fewer input-layer FLOPs), the pooled
    8,331-window client does not, nor does anything past MAX_ROWS; a frozen input layer takes it sooner."""
    assert pays(280, 5 * 9, 32, 601, 128, trains=True)
    assert not pays(8331, 5 * 261, 32, 601, 128, trains=True)
    assert not pays(MAX_ROWS + 1, 10_000, 32, 601, 128, trains=True)
    assert not pays(280, 1, 32, 601, 128, trains=True)  # one step: nothing to amortise Z = X W over
    assert pays(280, 20, 32, 601, 128, trains=False)
    assert not pays(0, 45, 32, 601, 128, trains=True)
    assert all(pays(n, steps_of(n), BATCH, SIZES[0], SIZES[1], True) for n in (9, 10, 11, 12, 13, 14))
    assert not pays(300, steps_of(300), BATCH, SIZES[0], SIZES[1], True)


@pytest.mark.parametrize("big", [0, 300])
def test_gram_path_matches_the_plain_loop(big):
    """Three rounds of common/task/personal layers, uneven clients with partial batches; with ``big`` a round's
    stack trains on both paths at once."""
    fed = wide_federation(big)
    ref, ref_acc = simulate(fed, "loop")
    got, acc = simulate(fed, "stacked")
    assert acc == ref_acc
    for client in [c.id for c in fed.clients]:
        want, have = ref.client_state_dict(client), got.client_state_dict(client)
        for n in want:
            assert torch.allclose(have[n], want[n], atol=2e-6, rtol=1e-5), (client, n)
    assert not torch.equal(got.client_state_dict("c0")["fc1.weight"], mlp(SIZES, seed=2).fc1.weight)


def test_a_frozen_input_layer_is_read_through_the_gram_path_and_stays_put():
    """FedRep's first phase trains only the personal head: the input layer is Z = X W, read by rows."""
    fed = wide_federation()
    phases = ({"epochs": 2, "layers": ["personal"]}, {"epochs": 1, "layers": ["common", "task"]})
    ref, ref_acc = simulate(fed, "loop", phases=phases)
    got, acc = simulate(fed, "stacked", phases=phases)
    assert acc == ref_acc
    want, have = ref.client_state_dict("c4"), got.client_state_dict("c4")
    for n in want:
        assert torch.allclose(have[n], want[n], atol=2e-6, rtol=1e-5), n


def direct_and_gram(x, y, schedule, params):
    """Train the same stack on both paths: the Gram path, and the direct one (its cost ratio set to 0)."""
    head = mlp(SIZES, seed=2)
    out = {}
    for path, ratio in (("gram", StackedMLP.gram_max_ratio), ("direct", 0.0)):
        backend = StackedMLP(head)
        backend.gram_max_ratio = ratio
        work = {n: t.clone() for n, t in params.items()}
        backend.train(work, x, y, schedule, LocalSGD(0.05, 0.0, "cross_entropy", list(work)))
        out[path] = work
    return out


def stacked_inputs(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    x, y = torch.randn(total, SIZES[0], generator=g), torch.randint(0, SIZES[-1], (total,), generator=g)
    offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0)
    schedule = make_schedule(torch.tensor(sizes), offsets, BATCH, EPOCHS, g)
    head = mlp(SIZES, seed=2)
    backend = StackedMLP(head)
    params = {n: backend.to_native(n, p.detach()).unsqueeze(0).repeat(len(sizes), *[1] * p.dim())
              for n, p in head.named_parameters()}
    return x, y, schedule, params


def test_gram_and_direct_paths_agree_and_differ_only_in_rounding():
    x, y, schedule, params = stacked_inputs([9, 14, 11, 12])
    out = direct_and_gram(x, y, schedule, params)
    for n in params:
        assert torch.allclose(out["gram"][n], out["direct"][n], atol=1e-6, rtol=1e-5), n
        assert not torch.equal(out["gram"][n], params[n]), n


def test_a_client_trains_the_same_alone_and_inside_a_stack():
    """What keeps lockstep runs equal to runs alone: a client's path and numbers do not depend on its
    stack-mates (here a bigger client on the other path and smaller ones with narrower spans)."""
    x, y, schedule, params = stacked_inputs([13, 300, 9, 11], seed=1)
    backend = StackedMLP(mlp(SIZES, seed=2))
    together = {n: t.clone() for n, t in params.items()}
    backend.train(together, x, y, schedule, LocalSGD(0.05, 0.0, "cross_entropy", list(together)))
    for c in range(4):
        alone = {n: t[c:c + 1].clone() for n, t in params.items()}
        one = schedule.select(c, c + 1)
        StackedMLP(mlp(SIZES, seed=2)).train(alone, x, y, one, LocalSGD(0.05, 0.0, "cross_entropy", list(alone)))
        for n in params:
            assert torch.allclose(alone[n][0], together[n][c], atol=1e-6, rtol=0), (c, n)


def test_lockstep_runs_on_the_gram_path_equal_runs_alone():
    fed = wide_federation(300)
    alone = [simulate(fed, "stacked", seed=s) for s in (0, 1)]
    sims = [Simulation(mlp(SIZES, seed=2), LayerSpec.of(common="fc1", task="fc2", personal="fc3"), fed,
                       TrainConfig(rounds=3, local_epochs=EPOCHS, batch_size=BATCH, lr=0.05, momentum=0.0,
                                   backend="stacked", seed=s)) for s in (0, 1)]
    Lockstep(sims).run(3)
    for (ref, _), sim in zip(alone, sims, strict=True):
        for client in ("c0", "c6"):
            want, have = ref.client_state_dict(client), sim.client_state_dict(client)
            for n in want:
                assert torch.allclose(have[n], want[n], atol=1e-6, rtol=0), (client, n)


def test_momentum_and_proximal_terms_keep_the_direct_path():
    """Only plain SGD moves the weight linearly in the gradients; with momentum the results still match the
    loop (the direct path), which they would not if the Gram path were taken wrongly."""
    fed = wide_federation()
    ref, ref_acc = simulate(fed, "loop", momentum=0.9, keep_optimizer_state=True)
    got, acc = simulate(fed, "stacked", momentum=0.9, keep_optimizer_state=True)
    assert acc == ref_acc
    for n, want in ref.client_state_dict("c1").items():
        assert torch.allclose(got.client_state_dict("c1")[n], want, atol=2e-6, rtol=1e-5), n


def test_client_spans_cover_each_clients_rows_and_skip_padding():
    x, y, schedule, _ = stacked_inputs([9, 14, 0, 5])
    first, rows = client_spans(schedule.rows, schedule.weight > 0)
    assert first.tolist() == [0, 9, 0, 23] and rows.tolist() == [9, 14, 0, 5]


def test_the_stacked_gram_is_reused_only_for_the_same_data_and_clients():
    cache = GramCache()
    x = torch.randn(20, 5)
    one = cache.stacked(x, [(0, 4), (4, 6)], 6)
    assert torch.allclose(one[1], x[4:10] @ x[4:10].t()) and torch.equal(one[0, 4:], torch.zeros(2, 6))
    assert cache.stacked(x, [(0, 4), (4, 6)], 6) is one
    assert cache.stacked(x.clone(), [(0, 4), (4, 6)], 6) is not one  # other data, even if equal
    x.mul_(2)  # written in place: recomputed
    again = cache.stacked(x, [(0, 4), (4, 6)], 6)
    assert again is not one and torch.allclose(again[1], x[4:10] @ x[4:10].t())
    cache.stacked(x, [(4, 6)], 6)
    cache.stacked(x, [(0, 4)], 4)
    assert len(cache._stacks) == GramCache.keep


def test_the_memory_plan_counts_the_gram_path():
    small = StackedMLP(mlp([601, 128, 64, 32, 6]))
    assert small.client_workspace_bytes(280, 45, 32) == 4 * (2 * 280 * 128 + 2 * 280 * 280)
    assert small.client_workspace_bytes(8331, 1305, 32) == 0
