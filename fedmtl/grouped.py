"""Clients that start a round from the same weights, trained together: one GEMM per group, deltas as factors.

With plain SGD (no momentum, no proximal term) a linear layer's weight after ``s`` local steps of one client is
``W_s = W0 + sum_{t<s} G_t^T H_t``, where ``H_t`` holds the layer's input rows at step ``t`` and ``G_t`` its
output gradient rows times ``-lr``. So no client needs its own copy of ``W`` during the round:

- forward:  ``h W_s^T = h W0^T + sum_t (h H_t^T) G_t``;
- backward: ``g W_s   = g W0   + sum_t (g G_t^T) H_t`` (the input gradient, taken before the step's update).

The ``W0`` products of every client of a group - all sampled clients for a common layer, one task group for a
task layer, one client for a personal layer - are one GEMM over their stacked batches (``[clients x 16, 4096] x
[4096, 4096]`` is compute-bound where each client's own ``[16, 4096]`` product is memory-bound), and the
corrections are small batched matmuls through the client's earlier rows. Their cost grows with the step count,
so :func:`correction_ratio` says when the grouping pays. A client's delta ``W_S - W0 = G^T H`` stays factored
(:class:`ClientDeltas`): a weighted-sum aggregator folds every client's delta as one GEMM (``[out, clients x
rows] x [clients x rows, in]``); whatever needs per-client values materialises them.

Same maths as step-by-step SGD (:class:`~fedmtl.fused.FusedMLP` checks it against the plain loop); only the
order of the floating-point sums differs. Weights are in ``nn.Linear``'s ``[out, in]`` layout, activations
sample-major (``[clients, batch, features]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fedmtl.losses import loss_grad
from fedmtl.schedule import BatchSchedule

if TYPE_CHECKING:
    from fedmtl.backends import LocalSGD

__all__ = ["ClientDeltas", "correction_ratio", "train_grouped"]

Params = dict[str, torch.Tensor]


@dataclass
class ClientDeltas:
    """What a round of local training moved, per client, without a per-client model.

    ``factors[w] = (left, right)``: client ``j``'s delta of weight ``w`` is ``left[j]^T @ right[j]`` (``left``
    ``[c, r, out]``, ``right`` ``[c, r, in]``; ``r`` rows, zero rows where a client took fewer steps).
    ``dense[n]``: ``[c, *shape]`` deltas given outright (biases). Parameters in neither did not move.
    """

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    dense: Params

    @property
    def clients(self) -> int:
        first = next(iter(self.factors.values()), None)
        if first is not None:
            return first[0].shape[0]
        return next(iter(self.dense.values())).shape[0] if self.dense else 0

    def materialize(self, name: str, rows: slice | None = None) -> torch.Tensor:
        """The ``[c, *shape]`` deltas of ``name`` (of clients ``rows`` only, when given)."""
        rows = slice(None) if rows is None else rows
        if name in self.factors:
            left, right = self.factors[name]
            return torch.bmm(left[rows].transpose(1, 2), right[rows])
        return self.dense[name][rows]

    def select(self, index: torch.Tensor) -> ClientDeltas:
        """The deltas of clients ``index`` only (copies)."""
        return ClientDeltas({n: (a.index_select(0, index), b.index_select(0, index)) for n, (a, b) in
                             self.factors.items()}, {n: t.index_select(0, index) for n, t in self.dense.items()})

    def finite(self) -> torch.Tensor:
        """``[c]``: whether every value a client moved is finite (a sum is NaN/Inf iff a term is, or overflows:
        diverged either way); one read pass, no temporaries."""
        ok = torch.ones(self.clients, dtype=torch.bool)
        for left, right in self.factors.values():
            ok &= torch.isfinite(left.flatten(1).sum(1)).cpu() & torch.isfinite(right.flatten(1).sum(1)).cpu()
        for t in self.dense.values():
            ok &= torch.isfinite(t.flatten(1).sum(1)).cpu()
        return ok


def correction_ratio(sizes: Sequence[int], steps: int, batch: int) -> float:
    """Correction FLOPs over main FLOPs of a grouped local run of ``steps`` steps of ``batch`` rows through an MLP
    of ``sizes``: the corrections of step ``t`` go through ``t * batch`` earlier rows per layer and direction."""
    main = corrections = 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        main += 3 * steps * batch * fan_in * fan_out
        corrections += 2 * batch * batch * (steps * (steps - 1) // 2) * (fan_in + fan_out)
    return corrections / max(main, 1)


class _Groups:
    """Which clients share which base value of one parameter: slices where the members are contiguous."""

    def __init__(self, groups: torch.Tensor) -> None:
        groups = groups.cpu()
        self.single = bool((groups == groups[0]).all()) if len(groups) else True
        self.parts: list[tuple[int, slice | torch.Tensor]] = []
        for g in groups.unique().tolist():
            idx = (groups == g).nonzero().squeeze(1)
            contiguous = int(idx[-1] - idx[0]) + 1 == len(idx)
            self.parts.append((g, slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx))

    def matmul(self, a: torch.Tensor, base: torch.Tensor, *, transpose: bool) -> torch.Tensor:
        """``a[j] @ base[group(j)]^T`` (or without the transpose) for every client ``j``: one GEMM per group."""
        c, b, k = a.shape
        if self.single:
            w = base[self.parts[0][0]] if self.parts else base[0]
            return torch.mm(a.reshape(c * b, k), w.t() if transpose else w).view(c, b, -1)
        out = None
        for g, members in self.parts:
            w = base[g].t() if transpose else base[g]
            part = a[members] if isinstance(members, slice) else a.index_select(0, members.to(a.device))
            z = torch.mm(part.reshape(-1, k), w).view(part.shape[0], b, -1)
            if out is None:
                out = torch.empty(c, b, z.shape[-1], dtype=z.dtype, device=z.device)
            if isinstance(members, slice):
                out[members] = z
            else:
                out.index_copy_(0, members.to(a.device), z)
        assert out is not None
        return out


def _per_client(base: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each client's base value, stacked ``[c, ...]`` (a copy)."""
    return base.index_select(0, groups.to(base.device))


def train_grouped(layers: Sequence[tuple[str, str]], bases: Params, groups: dict[str, torch.Tensor],
                  x: torch.Tensor, y: torch.Tensor, phases: Sequence[tuple[BatchSchedule, LocalSGD]]
                  ) -> ClientDeltas:
    """Local SGD of ``c`` clients through the MLP ``layers`` ((weight, bias) names), every phase in turn.

    ``bases[n]`` stacks the distinct starting values of parameter ``n`` (``[g, *shape]``) and ``groups[n]``
    (``[c]``) says which one each client starts from. Returns the clients' deltas; ``bases`` is not modified.
    """
    for _, sgd in phases:
        if sgd.momentum or any(float(mu.abs().max()) for mu in sgd.prox.values() if mu.numel()):
            raise ValueError("grouped training needs plain SGD: no momentum, no proximal term")
    c = len(next(iter(groups.values())))
    plans = {n: _Groups(g) for n, g in groups.items()}
    # rows each weight's factors need: every step of every phase that moves it
    rows = {w: 0 for w, _ in layers}
    for schedule, sgd in phases:
        for w, _ in layers:
            if w in sgd.update:
                rows[w] += schedule.steps * schedule.rows.shape[2]
    device, dtype = x.device, torch.float32
    left = {w: torch.empty(c, rows[w], bases[w].shape[1], dtype=dtype, device=device) for w, _ in layers if rows[w]}
    right = {w: torch.empty(c, rows[w], bases[w].shape[2], dtype=dtype, device=device) for w, _ in layers if rows[w]}
    filled = dict.fromkeys(left, 0)
    bias = {b: _per_client(bases[b], groups[b]) for _, b in layers}
    moved_bias: set[str] = set()
    last = len(layers) - 1
    with torch.no_grad():
        for schedule, sgd in phases:
            update = set(sgd.update)
            moved_bias |= {b for _, b in layers if b in update}
            # the input gradient of layer i is needed only if some layer below it moves
            lowest = min((i for i, (w, b) in enumerate(layers) if w in update or b in update), default=len(layers))
            for s in range(schedule.steps):
                step_rows = schedule.rows[s]  # [c, B]
                batch = step_rows.shape[1]
                acts = [x.index_select(0, step_rows.reshape(-1)).view(c, batch, -1)]
                for i, (w, b) in enumerate(layers):
                    z = plans[w].matmul(acts[-1], bases[w], transpose=True)
                    n = filled.get(w, 0)
                    if n:
                        z.baddbmm_(torch.bmm(acts[-1], right[w][:, :n].transpose(1, 2)), left[w][:, :n])
                    z.add_(bias[b].unsqueeze(1))
                    acts.append(z.relu_() if i < last else z)
                targets = y.index_select(0, step_rows.reshape(-1)).view(c, batch, *y.shape[1:])
                dz = loss_grad(sgd.loss, acts.pop(), targets, schedule.weight[s])
                for i in range(last, lowest - 1, -1):
                    w, b = layers[i]
                    a = acts[i]
                    dh = None
                    if i > lowest:  # before this step's update: W_s, not W_{s+1}
                        dh = plans[w].matmul(dz, bases[w], transpose=False)
                        n = filled.get(w, 0)
                        if n:
                            dh.baddbmm_(torch.bmm(dz, left[w][:, :n].transpose(1, 2)), right[w][:, :n])
                    if w in update:
                        n = filled[w]
                        left[w][:, n:n + batch].copy_(dz).mul_(-sgd.lr)
                        right[w][:, n:n + batch] = a
                        filled[w] = n + batch
                    if b in update:
                        bias[b].add_(dz.sum(1), alpha=-sgd.lr)
                    if dh is not None:
                        dz = torch.ops.aten.threshold_backward(dh, a, 0.0)
    dense = {b: bias[b].sub_(_per_client(bases[b], groups[b])) for b in moved_bias}
    return ClientDeltas({w: (left[w], right[w]) for w in left}, dense)
