"""Tests for the server-side aggregators on tiny hand-computed tensors."""

from __future__ import annotations

import io
import math

import pytest
import torch

from fedmtl.aggregators import (
    AGGREGATORS,
    Aggregator,
    FedAdam,
    FedAvg,
    FedProx,
    FedYogi,
    Median,
    TrimmedMean,
    coordinate_median,
    make_aggregator,
    weighted_mean,
)
from fedmtl.errors import CheckpointError, ConfigError, FedMTLError


def t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------- FedAvg / FedProx


def test_fedavg_is_sample_weighted_mean() -> None:
    # (1*[1, 2] + 3*[5, -2]) / 4 = [16, -4] / 4
    step = FedAvg().aggregate(t([[1.0, 2.0], [5.0, -2.0]]), t([1.0, 3.0]))
    torch.testing.assert_close(step, t([4.0, -1.0]))
    assert step.dtype == torch.float32


def test_weighted_mean_accepts_integer_weights_and_zero_weight_client() -> None:
    step = weighted_mean(t([[2.0], [100.0], [8.0]]), torch.tensor([1, 0, 2]))
    torch.testing.assert_close(step, t([6.0]))


def test_fedprox_aggregates_like_fedavg_and_exposes_mu() -> None:
    updates, weights = t([[1.0, 2.0], [5.0, -2.0]]), t([1.0, 3.0])
    prox = FedProx(mu=0.5)
    assert prox.proximal_mu == 0.5 and prox.mu == 0.5
    assert FedProx().proximal_mu == 0.01
    assert FedAvg().proximal_mu == 0.0
    assert torch.equal(prox.aggregate(updates, weights), FedAvg().aggregate(updates, weights))


def test_fedprox_rejects_negative_mu() -> None:
    with pytest.raises(ConfigError, match="'mu'"):
        FedProx(mu=-0.1)


# ---------------------------------------------------------------- FedAdam / FedYogi

LR, B1, B2, TAU = 0.1, 0.9, 0.99, 1e-3
# Two equally weighted clients whose mean update is d1 = [1, -2]; then a second round d2 = [0.01, 0.5],
# chosen so that for Yogi coordinate 0 has v > d^2 (v shrinks) and coordinate 1 has v < d^2 (v grows).
ROUND1 = (t([[0.0, 0.0], [2.0, -4.0]]), t([1.0, 1.0]))
D1 = [1.0, -2.0]
ROUND2 = (t([[0.01, 0.5]]), t([7.0]))
D2 = [0.01, 0.5]


def _hand_steps(yogi: bool) -> tuple[list[float], list[float]]:
    """Reddi et al. Algorithm 2 written out per coordinate with Python floats."""
    first, second = [], []
    for d1, d2 in zip(D1, D2, strict=True):
        m, v = 0.0, TAU**2
        m = B1 * m + (1 - B1) * d1
        v = v - (1 - B2) * d1 * d1 * math.copysign(1.0, v - d1 * d1) if yogi else B2 * v + (1 - B2) * d1 * d1
        first.append(LR * m / (math.sqrt(v) + TAU))
        m = B1 * m + (1 - B1) * d2
        v = v - (1 - B2) * d2 * d2 * math.copysign(1.0, v - d2 * d2) if yogi else B2 * v + (1 - B2) * d2 * d2
        second.append(LR * m / (math.sqrt(v) + TAU))
    return first, second


@pytest.mark.parametrize("cls, yogi", [(FedAdam, False), (FedYogi, True)])
def test_adaptive_first_and_second_step_match_hand_computation(cls: type, yogi: bool) -> None:
    agg = cls(lr=LR, beta1=B1, beta2=B2, tau=TAU)
    first, second = _hand_steps(yogi)
    torch.testing.assert_close(agg.aggregate(*ROUND1), t(first))
    torch.testing.assert_close(agg.aggregate(*ROUND2), t(second))
    assert agg.state_dict()["step"] == 2


def test_fedadam_first_step_literal_values() -> None:
    # m = 0.1 * [1, -2]; v = 0.99e-6 + 0.01 * [1, 4]; step = 0.1 m / (sqrt(v) + 1e-3)
    step = FedAdam(lr=LR).aggregate(*ROUND1)
    torch.testing.assert_close(step, t([0.0990050, -0.0995012]), rtol=1e-5, atol=0)


def test_fedadam_and_fedyogi_differ_on_second_step() -> None:
    adam, yogi = FedAdam(lr=LR), FedYogi(lr=LR)
    adam.aggregate(*ROUND1)
    yogi.aggregate(*ROUND1)
    v_adam, v_yogi = adam.state_dict()["v"], yogi.state_dict()["v"]
    # First step: Adam v = 0.99 tau^2 + 0.01 d^2, Yogi v = tau^2 + 0.01 d^2 (d = [1, -2]).
    torch.testing.assert_close(v_adam, t([0.01 + 0.99e-6, 0.04 + 0.99e-6]))
    torch.testing.assert_close(v_yogi, t([0.01 + 1e-6, 0.04 + 1e-6]))
    assert not torch.equal(adam.aggregate(*ROUND2), yogi.aggregate(*ROUND2))


def test_adaptive_state_starts_at_paper_values() -> None:
    agg = FedYogi(tau=1e-2)
    assert agg.state_dict() == {"step": 0}
    agg.aggregate(t([[0.0, 0.0, 0.0]]), t([1.0]))  # zero update leaves m = 0, v = tau^2 exactly for Yogi
    state = agg.state_dict()
    assert torch.equal(state["m"], torch.zeros(3))
    torch.testing.assert_close(state["v"], torch.full((3,), 1e-4))


@pytest.mark.parametrize("cls", [FedAdam, FedYogi])
def test_adaptive_state_dict_round_trip_is_bit_identical(cls: type) -> None:
    gen = torch.Generator().manual_seed(0)
    rounds = [(torch.randn(3, 5, generator=gen), torch.rand(3, generator=gen) + 0.5) for _ in range(4)]

    straight = cls(lr=0.05)
    expected = [straight.aggregate(u, w) for u, w in rounds]

    first = cls(lr=0.05)
    for u, w in rounds[:2]:
        first.aggregate(u, w)
    saved = first.state_dict()
    first.aggregate(*rounds[2])  # must not mutate the saved checkpoint
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)

    resumed = cls(lr=0.05)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.state_dict()["step"] == 2
    for (u, w), want in zip(rounds[2:], expected[2:], strict=True):
        assert torch.equal(resumed.aggregate(u, w), want)


def test_adaptive_rejects_changed_parameter_count() -> None:
    agg = FedAdam()
    agg.aggregate(t([[1.0, 2.0]]), t([1.0]))
    with pytest.raises(FedMTLError, match="one aggregator instance per sharing scope"):
        agg.aggregate(t([[1.0, 2.0, 3.0]]), t([1.0]))


def test_load_state_dict_rejects_foreign_state() -> None:
    with pytest.raises(CheckpointError, match="'fedavg'"):
        FedAvg().load_state_dict({"step": 3, "m": torch.zeros(2), "v": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="both 'm' and 'v'"):
        FedAdam().load_state_dict({"step": 1, "m": torch.zeros(2)})
    FedAvg().load_state_dict({})  # a stateless checkpoint loads fine


@pytest.mark.parametrize(
    "kwargs", [{"lr": 0.0}, {"beta1": 1.0}, {"beta2": -0.1}, {"tau": 0.0}, {"lr": "big"}]
)
def test_adaptive_rejects_bad_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=repr(next(iter(kwargs)))):
        FedAdam(**kwargs)


# ---------------------------------------------------------------- Median / TrimmedMean


def test_median_ignores_outlier_odd_count() -> None:
    updates = t([[2.0, -1.0], [1000.0, 5.0], [1.0, -3.0]])
    step = Median().aggregate(updates, t([100.0, 1.0, 1.0]))  # unweighted: big weight changes nothing
    torch.testing.assert_close(step, t([2.0, -1.0]))


def test_median_even_count_is_mean_of_middle_values() -> None:
    updates = t([[3.0], [1000.0], [1.0], [2.0]])
    torch.testing.assert_close(Median().aggregate(updates, t([1.0, 1.0, 1.0, 1.0])), t([2.5]))
    # torch.median would give the lower middle value, 2.0
    assert torch.median(updates, dim=0).values.item() == 2.0
    torch.testing.assert_close(coordinate_median(t([[0.0], [1.0]])), t([0.5]))


def test_trimmed_mean_drops_min_and_max() -> None:
    updates = t([[1.0, -50.0], [1000.0, 8.0], [2.0, 0.0], [3.0, 4.0]])
    step = TrimmedMean(beta=0.25).aggregate(updates, t([1.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(step, t([2.5, 2.0]))


def test_trimmed_mean_small_beta_trims_nothing() -> None:
    updates = t([[1.0], [2.0], [3.0], [1000.0]])
    # floor(0.1 * 4) = 0: plain unweighted mean, outlier included
    torch.testing.assert_close(TrimmedMean(beta=0.1).aggregate(updates, t([9.0, 1.0, 1.0, 1.0])), t([251.5]))


def test_trimmed_mean_floor_is_robust_to_float_rounding() -> None:
    # 0.29 * 100 == 28.999999999999996 in floating point; floor(beta * n) must still be 29
    updates = torch.arange(100, dtype=torch.float32).unsqueeze(1)
    step = TrimmedMean(beta=0.29).aggregate(updates, torch.ones(100))
    torch.testing.assert_close(step, updates[29:71].mean(dim=0))


@pytest.mark.parametrize("beta", [0.5, -0.1, 1.0])
def test_trimmed_mean_rejects_beta_out_of_range(beta: float) -> None:
    with pytest.raises(ConfigError, match="'beta'"):
        TrimmedMean(beta=beta)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_non_finite_update_is_rejected_and_counted(name: str) -> None:
    updates = t([[1.0, float("nan")], [1.0, 2.0], [float("inf"), 0.0]])
    with pytest.raises(FedMTLError, match=rf"aggregator '{name}': 2 of 3 client\(s\) sent non-finite"):
        make_aggregator(name).aggregate(updates, t([1.0, 1.0, 1.0]))


@pytest.mark.parametrize(
    "updates, weights, pattern",
    [
        (t([1.0, 2.0]), t([1.0]), "2-D"),
        (t([[1.0], [2.0]]), t([1.0, 2.0, 3.0]), "one entry per client"),
        (t([[1.0], [2.0]]), t([0.0, 0.0]), "total client weight must be positive"),
        (t([[1.0], [2.0]]), t([-1.0, 2.0]), "non-negative"),
        (torch.zeros(0, 3), torch.zeros(0), "no client updates"),
        (torch.ones(2, 2, dtype=torch.int64), t([1.0, 1.0]), "floating point"),
    ],
)
def test_bad_inputs_raise_fedmtl_error(updates: torch.Tensor, weights: torch.Tensor, pattern: str) -> None:
    with pytest.raises(FedMTLError, match=pattern):
        FedAvg().aggregate(updates, weights)


def test_failed_validation_leaves_adaptive_state_untouched() -> None:
    agg = FedAdam()
    agg.aggregate(t([[1.0, 2.0]]), t([1.0]))
    before = agg.state_dict()
    with pytest.raises(FedMTLError):
        agg.aggregate(t([[float("nan"), 2.0]]), t([1.0]))
    after = agg.state_dict()
    assert (
        after["step"] == 1 and torch.equal(after["m"], before["m"]) and torch.equal(after["v"], before["v"])
    )


# ---------------------------------------------------------------- registry


def test_registry_builds_each_aggregator() -> None:
    assert set(AGGREGATORS) == {"fedavg", "fedprox", "fedadam", "fedyogi", "median", "trimmed_mean"}
    for name, cls in AGGREGATORS.items():
        agg = make_aggregator(name)
        assert type(agg) is cls and agg.name == name
        assert isinstance(agg, Aggregator)
    assert make_aggregator("fedprox", mu=0.3).proximal_mu == 0.3
    assert make_aggregator("Trimmed-Mean", beta=0.2).beta == 0.2


def test_registry_unknown_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown aggregator 'fedsgd' \(known: fedavg, fedprox") as exc:
        make_aggregator("fedsgd")
    assert "\n" not in str(exc.value)


def test_registry_unknown_option() -> None:
    with pytest.raises(ConfigError) as exc:
        make_aggregator("fedprox", mu2=0.1)
    assert str(exc.value) == "aggregator 'fedprox': unknown option 'mu2' (known: mu)"
    with pytest.raises(ConfigError, match=r"aggregator 'fedavg': unknown option 'lr' \(known: none\)"):
        make_aggregator("fedavg", lr=0.1)
    with pytest.raises(ConfigError, match=r"known: lr, beta1, beta2, tau"):
        make_aggregator("fedyogi", beta3=0.5)


def test_registry_bad_option_value() -> None:
    with pytest.raises(ConfigError, match=r"aggregator 'fedprox': option 'mu' must be in \[0, inf\), got -1"):
        make_aggregator("fedprox", mu=-1)
    with pytest.raises(ConfigError, match="must be a number"):
        make_aggregator("trimmed_mean", beta=True)


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "median", "trimmed_mean"])
@pytest.mark.parametrize("n_clients", [1, 2, 3, 4, 7])
def test_identical_updates_give_that_update(name: str, n_clients: int) -> None:
    gen = torch.Generator().manual_seed(n_clients)
    update = torch.randn(6, generator=gen)
    weights = torch.rand(n_clients, generator=gen) * 10 + 0.1
    kwargs = {"beta": 0.25} if name == "trimmed_mean" else {}
    step = make_aggregator(name, **kwargs).aggregate(update.expand(n_clients, -1).clone(), weights)
    torch.testing.assert_close(step, update)


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_adaptive_identical_updates_match_single_client(name: str) -> None:
    update = t([0.3, -1.2, 0.0])
    many, one = make_aggregator(name), make_aggregator(name)
    for _ in range(3):
        torch.testing.assert_close(
            many.aggregate(update.expand(5, -1).clone(), t([1.0, 2.0, 3.0, 4.0, 5.0])),
            one.aggregate(update.unsqueeze(0), t([1.0])),
        )
