"""Server-side aggregation plug-ins: turn a scope's client deltas into the step the server adds.

Pure tensor math, no federation logic. The engine keeps one aggregator instance per sharing scope
(common layers over all sampled clients; one per task group for task layers). A round is streamed:
``begin(size, weights)`` announces ``n`` clients (their sample counts) and ``P`` coordinates, ``fold(updates,
offset)`` hands over tiles of ``[c, p]`` deltas (client model minus global model) - the next ``c`` clients'
coordinates ``offset..offset+p`` - in any chunking, and ``finish()`` returns the ``[P]`` step that is *added*
to the global parameters of that scope. So a round never needs every client's model at once: weighted-sum
aggregators (FedAvg, FedProx, FedAdam, FedYogi) keep one running ``[P]`` sum; median and trimmed mean must
keep every value, but sort in coordinate blocks so their peak stays near the ``[n, P]`` store itself.
``aggregate(updates, weights)`` is the all-at-once form of the same three calls. ``fold_factored(left, right,
offset)`` takes a tile whose client deltas are matrix products (what a grouped backend leaves, see
:mod:`fedmtl.grouped`): weighted sums fold every client's product as one GEMM, the others get them materialised.

Stateful server optimisers (FedAdam, FedYogi) keep their moments per instance, which is why the
engine needs one instance per scope and why they expose ``state_dict``/``load_state_dict`` for
checkpoints.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Protocol, runtime_checkable

import torch

from fedmtl.errors import CheckpointError, ConfigError, DivergedError, FedMTLError

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "Median",
    "TrimmedMean",
    "coordinate_median",
    "make_aggregator",
    "trimmed_mean",
    "validate_updates",
    "validate_weights",
    "weighted_mean",
]


@runtime_checkable
class Aggregator(Protocol):
    """What the engine needs from an aggregator, one instance per sharing scope."""

    name: str
    proximal_mu: float

    def begin(self, size: int, weights: torch.Tensor) -> None:
        """Start a round: ``weights`` (``[n]``, sample counts) of the ``n`` clients to come, ``size`` = ``P``."""
        ...

    def fold(self, updates: torch.Tensor, offset: int = 0) -> None:
        """Take ``[c, p]`` deltas: the next ``c`` clients (in ``begin``'s order) at coordinates ``offset:offset+p``."""
        ...

    def finish(self) -> torch.Tensor:
        """Return the ``[P]`` step the server adds to the global params of this scope; ends the round."""
        ...

    def aggregate(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """All at once: ``begin``, one ``fold`` of the whole ``[n, P]`` matrix, ``finish``."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor | float | int]:
        """Everything needed to resume bit-identically (server-optimiser moments, step count)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def validate_updates(name: str, updates: torch.Tensor, weights: torch.Tensor) -> None:
    """Reject inputs that would silently poison the global model; messages name the aggregator.

    Raises :class:`FedMTLError` if ``updates`` is not a 2-D floating tensor with at least one
    client, ``weights`` is not 1-D with one finite, non-negative entry per client, the total
    weight is not positive, or any client's update contains NaN/Inf.
    """
    if not isinstance(updates, torch.Tensor) or updates.dim() != 2:
        shape = tuple(updates.shape) if isinstance(updates, torch.Tensor) else type(updates).__name__
        raise FedMTLError(f"aggregator {name!r}: updates must be a 2-D [n_clients, P] tensor, got {shape}")
    if not updates.is_floating_point():
        raise FedMTLError(f"aggregator {name!r}: updates must be floating point, got {updates.dtype}")
    n = updates.shape[0]
    if n == 0:
        raise FedMTLError(f"aggregator {name!r}: no client updates to aggregate (n_clients = 0)")
    if not isinstance(weights, torch.Tensor) or weights.dim() != 1 or weights.shape[0] != n:
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise FedMTLError(
            f"aggregator {name!r}: weights must be a 1-D tensor with one entry per client ({n}), got {shape}"
        )
    w = weights.double()
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise FedMTLError(
            f"aggregator {name!r}: weights must be finite and non-negative, got {weights.tolist()}"
        )
    total = float(w.sum())
    if not total > 0:
        raise FedMTLError(f"aggregator {name!r}: total client weight must be positive, got {total}")
    # a row's sum is NaN/Inf iff the row holds NaN/Inf (or overflows float range): one pass, no [n, P] temporaries
    bad = int((~torch.isfinite(updates.sum(dim=1))).sum())
    if bad:
        raise DivergedError(
            f"aggregator {name!r}: {bad} of {n} client(s) sent non-finite values (NaN/Inf) in their update"
        )


def validate_weights(name: str, weights: torch.Tensor) -> None:
    """The ``begin`` half of :func:`validate_updates`: one finite, non-negative weight per client, total > 0."""
    if not isinstance(weights, torch.Tensor) or weights.dim() != 1 or weights.shape[0] == 0:
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise FedMTLError(f"aggregator {name!r}: weights must be a non-empty 1-D tensor (one per client), got {shape}")
    w = weights.double()
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise FedMTLError(f"aggregator {name!r}: weights must be finite and non-negative, got {weights.tolist()}")
    total = float(w.sum())
    if not total > 0:
        raise FedMTLError(f"aggregator {name!r}: total client weight must be positive, got {total}")


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sample-weighted mean over clients: ``sum_m N_m * delta_m / sum_m N_m`` (paper eq. 1/2).

    Inputs are assumed valid (see :func:`validate_updates`). Normalising the weights first keeps
    the result in ``updates.dtype`` without building an ``[n, P]`` weighted copy.
    """
    w = weights.to(dtype=updates.dtype, device=updates.device)
    return (w / w.sum()) @ updates


def coordinate_median(updates: torch.Tensor) -> torch.Tensor:
    """Unweighted coordinate-wise median over clients.

    For an even number of clients this is the *true* median, the mean of the two middle values;
    ``torch.median`` would return the lower one, which biases the step towards negative values.
    """
    n = updates.shape[0]
    ordered = torch.sort(updates, dim=0).values
    mid = n // 2
    if n % 2:
        return ordered[mid].clone()
    return (ordered[mid - 1] + ordered[mid]) / 2


def _trim_count(n: int, beta: float) -> int:
    k = math.floor(beta * n + 1e-9)
    if n - 2 * k <= 0:
        raise FedMTLError(f"trimmed mean with beta={beta} removes all {n} client updates (trims {k} per side)")
    return k


def trimmed_mean(updates: torch.Tensor, beta: float) -> torch.Tensor:
    """Unweighted coordinate-wise trimmed mean: drop ``floor(beta * n)`` smallest and largest values.

    A tiny epsilon guards ``floor`` against products like ``0.29 * 100 = 28.999...``.
    Raises :class:`FedMTLError` if the trimming would leave no value to average.
    """
    n = updates.shape[0]
    k = _trim_count(n, beta)
    if k == 0:
        return updates.mean(dim=0)
    ordered = torch.sort(updates, dim=0).values
    return ordered[k : n - k].mean(dim=0)


def _float_option(
    agg: str, key: str, value: Any, *, lo: float, hi: float | None, hi_open: bool, lo_open: bool = False
) -> float:
    """Coerce a numeric option and check its range, raising a one-line :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"aggregator {agg!r}: option {key!r} must be a number, got {value!r}")
    v = float(value)
    lo_ok = v > lo if lo_open else v >= lo
    hi_ok = hi is None or (v < hi if hi_open else v <= hi)
    if not (math.isfinite(v) and lo_ok and hi_ok):
        left = "(" if lo_open else "["
        right = "inf)" if hi is None else (f"{hi:g})" if hi_open else f"{hi:g}]")
        raise ConfigError(
            f"aggregator {agg!r}: option {key!r} must be in {left}{lo:g}, {right}, got {value!r}"
        )
    return v


# --------------------------------------------------------------------------------------------
# Aggregators
# --------------------------------------------------------------------------------------------


class _Streaming:
    """The round protocol shared by every aggregator: ``begin`` checks the weights, ``fold`` checks each tile
    (shape, dtype, finiteness) and counts what it covered, ``finish`` refuses a round that was not fully folded."""

    name: str = ""
    proximal_mu: float = 0.0
    _weights: torch.Tensor | None = None

    def begin(self, size: int, weights: torch.Tensor) -> None:
        validate_weights(self.name, weights)
        self._size, self._weights = int(size), weights.double()
        self._rows: dict[int, int] = {}  # offset -> clients folded at that offset so far
        self._covered = 0
        self._start()

    def _start(self) -> None:
        raise NotImplementedError

    def fold(self, updates: torch.Tensor, offset: int = 0) -> None:
        if self._weights is None:
            raise FedMTLError(f"aggregator {self.name!r}: fold() before begin()")
        if not isinstance(updates, torch.Tensor) or updates.dim() != 2 or not updates.is_floating_point():
            got = (tuple(updates.shape), updates.dtype) if isinstance(updates, torch.Tensor) else type(updates)
            raise FedMTLError(f"aggregator {self.name!r}: updates must be a 2-D floating tensor, got {got}")
        c, p = updates.shape
        first = self._rows.get(offset, 0)
        if first + c > len(self._weights) or offset < 0 or offset + p > self._size:
            raise FedMTLError(f"aggregator {self.name!r}: tile of {c} clients x {p} coordinates at offset {offset} "
                              f"falls outside the round ({len(self._weights)} clients x {self._size})")
        # a row's sum is NaN/Inf iff the row holds NaN/Inf (or overflows float range): one pass, no temporaries
        bad = int((~torch.isfinite(updates.sum(dim=1))).sum())
        if bad:
            raise DivergedError(f"aggregator {self.name!r}: {bad} of {c} client(s) sent non-finite values (NaN/Inf) "
                                "in their update")
        self._fold(updates, first, offset)
        self._rows[offset] = first + c
        self._covered += c * p

    def _fold(self, updates: torch.Tensor, first: int, offset: int) -> None:
        raise NotImplementedError

    def fold_factored(self, left: torch.Tensor, right: torch.Tensor, offset: int = 0) -> None:
        """Take the next ``c`` clients' deltas of one ``[m, n]`` block (row-major at coordinates ``offset``..),
        client ``j``'s being ``left[j]^T @ right[j]`` (``left`` ``[c, r, m]``, ``right`` ``[c, r, n]``): how a
        backend that never built per-client weights hands them over. Weighted sums fold them as one GEMM; the
        others get them materialised a few clients at a time."""
        if self._weights is None:
            raise FedMTLError(f"aggregator {self.name!r}: fold_factored() before begin()")
        if left.dim() != 3 or right.dim() != 3 or left.shape[:2] != right.shape[:2]:
            raise FedMTLError(f"aggregator {self.name!r}: factors must be [c, r, m] and [c, r, n], got "
                              f"{tuple(left.shape)} and {tuple(right.shape)}")
        c, _, m = left.shape
        p = m * right.shape[2]
        first = self._rows.get(offset, 0)
        if first + c > len(self._weights) or offset < 0 or offset + p > self._size:
            raise FedMTLError(f"aggregator {self.name!r}: tile of {c} clients x {p} coordinates at offset {offset} "
                              f"falls outside the round ({len(self._weights)} clients x {self._size})")
        bad = int((~(torch.isfinite(left.flatten(1).sum(1)) & torch.isfinite(right.flatten(1).sum(1)))).sum())
        if bad:
            raise DivergedError(f"aggregator {self.name!r}: {bad} of {c} client(s) sent non-finite values (NaN/Inf) "
                                "in their update")
        self._fold_factored(left, right, first, offset)
        self._rows[offset] = first + c
        self._covered += c * p

    def _fold_factored(self, left: torch.Tensor, right: torch.Tensor, first: int, offset: int) -> None:
        c, _, m = left.shape
        step = max(1, self.FACTOR_BLOCK_BYTES // (4 * m * right.shape[2]))
        for start in range(0, c, step):
            block = torch.bmm(left[start: start + step].transpose(1, 2), right[start: start + step])
            self._fold(block.reshape(block.shape[0], -1), first + start, offset)

    FACTOR_BLOCK_BYTES = 64 << 20  # materialised deltas at once, for aggregators that need per-client values

    def finish(self) -> torch.Tensor:
        if self._weights is None:
            raise FedMTLError(f"aggregator {self.name!r}: finish() before begin()")
        expected = len(self._weights) * self._size
        if self._covered != expected:
            raise FedMTLError(f"aggregator {self.name!r}: the round folded {self._covered} of {expected} "
                              "client-coordinates")
        try:
            return self._finish()
        finally:
            self._weights = None
            self._release()

    def _finish(self) -> torch.Tensor:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def aggregate(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        validate_updates(self.name, updates, weights)
        self.begin(updates.shape[1], weights)
        try:
            self.fold(updates)
        except BaseException:
            self._weights = None
            self._release()
            raise
        return self.finish()


class _WeightedSum(_Streaming):
    """Folds tiles into the running sample-weighted mean: memory ``[P]`` whatever the number of clients."""

    def _start(self) -> None:
        self._sum: torch.Tensor | None = None
        self._scale = self._weights / self._weights.sum()  # normalised first, as weighted_mean does

    def _fold(self, updates: torch.Tensor, first: int, offset: int) -> None:
        if self._sum is None:
            self._sum = torch.zeros(self._size, dtype=updates.dtype, device=updates.device)
        w = self._scale[first: first + updates.shape[0]].to(dtype=updates.dtype, device=updates.device)
        block = self._sum[offset: offset + updates.shape[1]]
        block.addmv_(updates.t(), w)

    def _fold_factored(self, left: torch.Tensor, right: torch.Tensor, first: int, offset: int) -> None:
        """``sum_j w_j left_j^T right_j`` as one GEMM over every client's rows: no per-client delta is built."""
        c, r, m = left.shape
        n = right.shape[2]
        if self._sum is None:
            self._sum = torch.zeros(self._size, dtype=left.dtype, device=left.device)
        w = self._scale[first: first + c].to(dtype=left.dtype, device=left.device)
        scaled = (left * w.view(-1, 1, 1)).reshape(c * r, m)
        self._sum[offset: offset + m * n].view(m, n).addmm_(scaled.t(), right.reshape(c * r, n))

    def _mean(self) -> torch.Tensor:
        assert self._sum is not None
        return self._sum

    def _release(self) -> None:
        self._sum = None


class _Stored(_Streaming):
    """Keeps every client's value (order statistics need them all) and reduces in coordinate blocks, so the
    sort's values and indices never exceed ``BLOCK_BYTES``-sized slices on top of the ``[n, P]`` store."""

    BLOCK_BYTES = 64 << 20
    keeps_all_updates = True  # memory planning: this scope holds [n, P] during a round

    def _start(self) -> None:
        self._store: torch.Tensor | None = None

    def _fold(self, updates: torch.Tensor, first: int, offset: int) -> None:
        if self._store is None:
            self._store = torch.empty(len(self._weights), self._size, dtype=updates.dtype, device=updates.device)
        self._store[first: first + updates.shape[0], offset: offset + updates.shape[1]] = updates

    def _reduce(self, block: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _finish(self) -> torch.Tensor:
        assert self._store is not None
        n = self._store.shape[0]
        step = max(1, self.BLOCK_BYTES // (12 * n))  # sort: values (4 B) + int64 indices (8 B) per entry
        out = torch.empty(self._size, dtype=self._store.dtype, device=self._store.device)
        for start in range(0, self._size, step):
            out[start: start + step] = self._reduce(self._store[:, start: start + step])
        return out

    def _release(self) -> None:
        self._store = None


class _Stateless:
    """Shared plumbing for aggregators with no server-side state (nothing to checkpoint)."""

    name: str = ""

    def state_dict(self) -> dict[str, torch.Tensor | float | int]:
        """Nothing to save: the result depends only on the current round's updates."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Accept only an empty state, so a checkpoint from a stateful aggregator is not silently dropped."""
        if state:
            raise CheckpointError(
                f"aggregator {self.name!r} is stateless but the checkpoint holds keys {sorted(state)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FedAvg(_Stateless, _WeightedSum):
    """McMahan et al. FedAvg: the sample-weighted mean of client deltas, applied as-is (server lr 1)."""

    name = "fedavg"

    def _finish(self) -> torch.Tensor:
        return self._mean()


class FedProx(FedAvg):
    """Li et al. FedProx: FedAvg on the server; the engine adds ``mu/2 ||w - w_global||^2`` client-side."""

    name = "fedprox"

    def __init__(self, mu: float = 0.01) -> None:
        self.proximal_mu = _float_option(self.name, "mu", mu, lo=0.0, hi=None, hi_open=True)

    @property
    def mu(self) -> float:
        """Alias of :attr:`proximal_mu`, the name used in the paper and the config."""
        return self.proximal_mu

    def __repr__(self) -> str:
        return f"FedProx(mu={self.proximal_mu})"


class _AdaptiveServerOpt(_WeightedSum):
    """Reddi et al. (2021) "Adaptive Federated Optimization" server optimisers.

    ``delta`` is the weighted mean client update; ``m = b1 m + (1 - b1) delta``; the second moment
    ``v`` is updated by :meth:`_second_moment`; the step is ``lr * m / (sqrt(v) + tau)``.
    Following the paper (Algorithm 2): no bias correction, ``m0 = 0`` and ``v0 = tau**2``.
    State is created lazily on the first call because ``P`` is only known then; a later call
    with a different ``P`` is an error rather than a silent reset.
    """

    name: str = ""
    proximal_mu: float = 0.0

    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        self.lr = _float_option(self.name, "lr", lr, lo=0.0, hi=None, hi_open=True, lo_open=True)
        self.beta1 = _float_option(self.name, "beta1", beta1, lo=0.0, hi=1.0, hi_open=True)
        self.beta2 = _float_option(self.name, "beta2", beta2, lo=0.0, hi=1.0, hi_open=True)
        self.tau = _float_option(self.name, "tau", tau, lo=0.0, hi=None, hi_open=True, lo_open=True)
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.step_count = 0

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def begin(self, size: int, weights: torch.Tensor) -> None:
        if self.m is not None and self.m.shape[0] != size:
            raise FedMTLError(
                f"aggregator {self.name!r}: update has {size} parameters but the optimiser state has "
                f"{self.m.shape[0]}; use one aggregator instance per sharing scope"
            )
        super().begin(size, weights)

    def _finish(self) -> torch.Tensor:
        """One server-optimiser step on the weighted mean update; returns ``lr * m / (sqrt(v) + tau)``."""
        delta = self._mean()
        p = delta.shape[0]
        if self.m is None or self.v is None:
            self.m = torch.zeros_like(delta)
            self.v = torch.full_like(delta, self.tau**2)
        elif self.m.shape[0] != p:
            raise FedMTLError(
                f"aggregator {self.name!r}: update has {p} parameters but the optimiser state has "
                f"{self.m.shape[0]}; use one aggregator instance per sharing scope"
            )
        m = self.m.to(delta)
        v = self.v.to(delta)
        m = self.beta1 * m + (1.0 - self.beta1) * delta
        v = self._second_moment(v, delta * delta)
        self.m, self.v = m, v
        self.step_count += 1
        return self.lr * m / (torch.sqrt(v) + self.tau)

    def state_dict(self) -> dict[str, torch.Tensor | float | int]:
        """Moments (cloned, so later steps do not alter a saved checkpoint) and the step count."""
        state: dict[str, torch.Tensor | float | int] = {"step": self.step_count}
        if self.m is not None and self.v is not None:
            state["m"] = self.m.detach().clone()
            state["v"] = self.v.detach().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore moments and step count so the next step is bit-identical to an uninterrupted run."""
        unknown = sorted(set(state) - {"step", "m", "v"})
        if unknown:
            raise CheckpointError(
                f"aggregator {self.name!r}: unknown state keys {unknown} (known: m, v, step)"
            )
        if "step" not in state:
            raise CheckpointError(f"aggregator {self.name!r}: state is missing 'step'")
        has_m, has_v = "m" in state, "v" in state
        if has_m != has_v:
            raise CheckpointError(f"aggregator {self.name!r}: state must hold both 'm' and 'v' or neither")
        step = state["step"]
        step = int(step.item()) if isinstance(step, torch.Tensor) else step
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(
                f"aggregator {self.name!r}: 'step' must be a non-negative int, got {step!r}"
            )
        if has_m:
            m, v = state["m"], state["v"]
            if (
                not (isinstance(m, torch.Tensor) and isinstance(v, torch.Tensor))
                or m.dim() != 1
                or m.shape != v.shape
            ):
                raise CheckpointError(
                    f"aggregator {self.name!r}: 'm' and 'v' must be 1-D tensors of equal shape"
                )
            self.m, self.v = m.detach().clone(), v.detach().clone()
        else:
            self.m = self.v = None
        self.step_count = step

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, beta1={self.beta1}, beta2={self.beta2}, tau={self.tau})"


class FedAdam(_AdaptiveServerOpt):
    """FedAdam: Adam-style second moment ``v = b2 v + (1 - b2) delta**2``."""

    name = "fedadam"

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1.0 - self.beta2) * delta_sq


class FedYogi(_AdaptiveServerOpt):
    """FedYogi: ``v = v - (1 - b2) delta**2 sign(v - delta**2)``, so ``v`` grows additively, not by ratio."""

    name = "fedyogi"

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        return v - (1.0 - self.beta2) * delta_sq * torch.sign(v - delta_sq)


class Median(_Stateless, _Stored):
    """Coordinate-wise median over clients (unweighted): robust to a minority of outlier clients."""

    name = "median"

    def _reduce(self, block: torch.Tensor) -> torch.Tensor:
        """True median per coordinate (mean of the two middle values for an even client count)."""
        return coordinate_median(block)


class TrimmedMean(_Stateless, _Stored):
    """Coordinate-wise trimmed mean (unweighted): drops the ``floor(beta * n)`` extremes on each side."""

    name = "trimmed_mean"

    def __init__(self, beta: float = 0.1) -> None:
        self.beta = _float_option(self.name, "beta", beta, lo=0.0, hi=0.5, hi_open=True)

    def begin(self, size: int, weights: torch.Tensor) -> None:
        super().begin(size, weights)
        try:  # fail before the round's values are stored, not after
            _trim_count(len(weights), self.beta)
        except FedMTLError as exc:
            self._weights = None
            raise FedMTLError(f"aggregator {self.name!r}: {exc}") from None

    def _reduce(self, block: torch.Tensor) -> torch.Tensor:
        """Mean of the values left per coordinate after trimming both tails."""
        return trimmed_mean(block, self.beta)

    def __repr__(self) -> str:
        return f"TrimmedMean(beta={self.beta})"


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

AGGREGATORS: dict[str, type] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "median": Median,
    "trimmed_mean": TrimmedMean,
}


def _options(cls: type) -> list[str]:
    """Keyword options a class's constructor accepts (empty for stateless ones without ``__init__``)."""
    if cls.__init__ is object.__init__:
        return []
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def make_aggregator(name: str, **kwargs: Any) -> Aggregator:
    """Build a registered aggregator from config, raising a one-line :class:`ConfigError` on bad input.

    Names are matched case-insensitively with ``-`` treated as ``_`` (``"Trimmed-Mean"`` works).
    """
    known = ", ".join(AGGREGATORS)
    if not isinstance(name, str):
        raise ConfigError(f"aggregator name must be a string, got {name!r} (known: {known})")
    key = name.strip().lower().replace("-", "_")
    cls = AGGREGATORS.get(key)
    if cls is None:
        raise ConfigError(f"unknown aggregator {name!r} (known: {known})")
    options = _options(cls)
    for opt in kwargs:
        if opt not in options:
            listed = ", ".join(options) if options else "none"
            raise ConfigError(f"aggregator {key!r}: unknown option {opt!r} (known: {listed})")
    return cls(**kwargs)
