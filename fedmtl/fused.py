"""A backend for wide ReLU MLP heads at small batch: one client at a time, in-place SGD, no gradient tensors.

Why not :class:`~fedmtl.backends.StackedMLP` for the paper's face head (4096 -> 4096 -> 2048 -> 1024 -> 1, 27M
parameters, batch 16)? Every client has its own 108 MB of weights, so stacking clients adds no data reuse, and
CPU ``bmm`` over ``[C, 16, 4096] x [C, 4096, 4096]`` runs at a fraction of ``mm``'s rate. Here each client is
trained with plain 2-D matmuls on weights kept in ``nn.Linear``'s ``[out, in]`` layout and activations kept
transposed (``[features, batch]``), which is the fast orientation for a skinny (batch-16) operand:

- forward: ``z = W @ a + b`` (one ``addmm``), ReLU in place;
- backward: ``dh = W^T @ dz`` is computed before ``W`` changes, then the update ``W -= lr * dz @ a^T`` lands
  straight in the weight (``addmm_`` with ``alpha=-lr``); the gradient is never materialised, which saves a
  write and a read of every weight per step (a third of the memory traffic of ``optim.SGD``).

The input layer gets one more step. Its input is data, not a function of the weights, so with plain SGD
(no momentum, no proximal term) a client's whole local run can be written with the initial weight ``W0``: step
``s`` sees ``W_s = W0 - lr * sum_{t<s} dz_t a_t^T``, hence ``W_s a_s = W0 a_s - lr * sum_{t<s} dz_t (a_t^T a_s)``.
So the input layer's forward for a block of k steps is one matmul ``W0 @ [a_0 .. a_k]`` (plus rank-16
corrections through the small Gram matrix ``A^T A``), and its k updates are one ``addmm_`` at the block's end:
the largest weight (61% of the paper's head) is streamed twice per block instead of three times per step.
The block is bounded (``flush_every``): the Gram matrix and the corrections grow quadratically with k, so an
unbounded block (a pooled client's ~690 steps) would cost 43x the direct update's FLOPs.
Same maths as step-by-step SGD; only the order of the floating-point sums differs.

With plain SGD the same identity holds for every linear layer, which lets a whole round's clients skip their
per-client weight copies: :meth:`FusedMLP.train_grouped` trains the clients that start from the same weights
(all of them for common layers, a task group for task layers) as one GEMM per group and hands their deltas back
factored (:mod:`fedmtl.grouped`); the engine uses it while its corrections stay cheap (``grouped_max_ratio``).

Semantics match the other backends (same :class:`~fedmtl.schedule.BatchSchedule`, momentum buffers,
proximal terms, frozen layers pass gradients through), so it is checked against ``LoopBackend`` in the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from fedmtl.grouped import ClientDeltas, correction_ratio, train_grouped
from fedmtl.losses import loss_grad
from fedmtl.schedule import BatchSchedule

if TYPE_CHECKING:
    from fedmtl.backends import LocalSGD

__all__ = ["FusedMLP"]

Params = dict[str, torch.Tensor]


def _linear_layers(head: nn.Module) -> list[tuple[str, str]]:
    """(weight name, bias name) of each Linear of an alternating Linear/ReLU Sequential ending in Linear."""
    if not isinstance(head, nn.Sequential):
        raise TypeError(f"FusedMLP needs an nn.Sequential, got {type(head).__name__}")
    children = list(head.named_children())
    names = [type(c).__name__ for _, c in children]
    expected = ["Linear" if i % 2 == 0 else "ReLU" for i in range(len(names))]
    if not names or names != expected:
        raise TypeError(f"FusedMLP needs alternating Linear/ReLU ending in Linear, got {names}")
    layers = []
    for name, child in children:
        if isinstance(child, nn.Linear):
            if child.bias is None:
                raise TypeError("FusedMLP needs Linear layers with a bias")
            layers.append((f"{name}.weight", f"{name}.bias"))
    return layers


class FusedMLP:
    """Per-client 2-D matmuls on ``[out, in]`` weights with the SGD update fused into the backward pass."""

    name = "fused"

    # Steps per deferred block of the input layer. The Gram matrix and the corrections grow with the block, the
    # savings (W0 read once per block, not once per step, in a wide matmul) saturate. Measured: one client of the
    # paper's head (4096-4096-2048-1024-1, batch 16, BCE), 64 steps, 1 thread, CPU time per step (the machine
    # was shared, so process time, two interleaved passes): k=1 66-67 ms, k=4 51.4, k=8 51.2-53.0,
    # k=16 51.2-52.8, k=32 53.2, k=64 54.0. So 8: the plateau's start, a 128-column Gram matrix (64 KB).
    # The old unbounded deferral made that matrix 0.49 GB for a pooled client's 690 steps.
    flush_every = 8

    # Grouped training (fedmtl.grouped: clients sharing base weights as one GEMM per group, deltas left factored)
    # pays while its corrections stay small beside the main matmuls: the paper's face head at 7 steps of 16
    # rows spends 2% on them; a pooled client's ~690 steps would spend several times the main work.
    grouped_max_ratio = 0.25

    def __init__(self, head: nn.Module) -> None:
        self.layers = _linear_layers(head)
        linears = [m for m in head.children() if isinstance(m, nn.Linear)]
        self.sizes = [linears[0].in_features, *(m.out_features for m in linears)]

    @staticmethod
    def supports(head: nn.Module) -> bool:
        try:
            _linear_layers(head)
        except TypeError:
            return False
        return True

    def to_native(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    def from_native(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    def _forward_one(self, params: Params, c: int, a: torch.Tensor,
                     z0: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Activations ``[features, batch]`` of client ``c``: the input, each hidden ReLU output, the logits.
        ``z0``, when given, is the input layer's ``W @ a`` already computed (without its bias)."""
        out = [a]
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            if i == 0 and z0 is not None:
                z = z0.add_(params[b][c].unsqueeze(1))
            else:
                z = torch.addmm(params[b][c].unsqueeze(1), params[w][c], out[-1])
            out.append(z.relu_() if i < last else z)
        return out

    def _defers_input_layer(self, sgd: LocalSGD, c: int) -> bool:
        w = self.layers[0][0]
        return sgd.momentum == 0.0 and (w not in sgd.prox or float(sgd.prox[w][c]) == 0.0)

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([self._forward_one(params, c, x[c].t())[-1].t() for c in range(x.shape[0])])

    def train(self, params: Params, x: torch.Tensor, y: torch.Tensor, schedule: BatchSchedule, sgd: LocalSGD) -> None:
        steps = schedule.client_steps().tolist()
        update = set(sgd.update)
        with torch.no_grad():
            for c, n_steps in enumerate(steps):
                n_steps = int(n_steps)
                if n_steps == 0:
                    continue
                if self._defers_input_layer(sgd, c):
                    self._train_deferred(params, c, x, y, schedule, n_steps, update, sgd)
                    continue
                for s in range(n_steps):
                    rows = schedule.rows[s, c]
                    acts = self._forward_one(params, c, x.index_select(0, rows).t().contiguous())
                    self._backward(params, c, acts, self._output_grad(acts, y, rows, schedule, s, c, sgd), update,
                                   sgd)

    @staticmethod
    def _output_grad(acts: list[torch.Tensor], y: torch.Tensor, rows: torch.Tensor, schedule: BatchSchedule,
                     s: int, c: int, sgd: LocalSGD) -> torch.Tensor:
        logits = acts.pop().t().unsqueeze(0)
        return loss_grad(sgd.loss, logits, y.index_select(0, rows).unsqueeze(0),
                         schedule.weight[s, c].unsqueeze(0))[0].t().contiguous()

    def _train_deferred(self, params: Params, c: int, x: torch.Tensor, y: torch.Tensor, schedule: BatchSchedule,
                        n_steps: int, update: set[str], sgd: LocalSGD) -> None:
        """Client ``c``'s local steps with the input layer's forward batched over blocks of ``flush_every``
        steps and its updates applied once per block (see the module docstring)."""
        for first in range(0, n_steps, self.flush_every):
            self._deferred_block(params, c, x, y, schedule, first, min(n_steps, first + self.flush_every), update,
                                 sgd)

    def _deferred_block(self, params: Params, c: int, x: torch.Tensor, y: torch.Tensor, schedule: BatchSchedule,
                        first: int, stop: int, update: set[str], sgd: LocalSGD) -> None:
        w0 = self.layers[0][0]
        rows = schedule.rows[first:stop, c]
        steps, batch = rows.shape
        inputs = x.index_select(0, rows.reshape(-1)).t().contiguous()  # [in, k * B]
        z_all = torch.mm(params[w0][c], inputs)  # W0 @ a_s for every step of the block, one pass over W0
        moves = w0 in update
        gram = torch.mm(inputs.t(), inputs) if moves and steps > 1 else None  # a_t^T a_s
        grads = torch.empty(z_all.shape[0], steps * batch, dtype=z_all.dtype, device=z_all.device) if moves else None
        for s in range(steps):
            cols = slice(s * batch, (s + 1) * batch)
            z0 = z_all[:, cols].clone()
            if grads is not None and gram is not None and s > 0:
                z0.addmm_(grads[:, :s * batch], gram[:s * batch, cols], alpha=-sgd.lr)  # earlier steps' updates
            acts = self._forward_one(params, c, inputs[:, cols], z0)
            dz0 = self._backward(params, c, acts, self._output_grad(acts, y, rows[s], schedule, first + s, c, sgd),
                                 update, sgd, skip_input_weight=True)
            if grads is not None:
                grads[:, cols] = dz0
        if grads is not None:
            params[w0][c].addmm_(grads, inputs.t(), alpha=-sgd.lr)

    def grouped_pays(self, steps: int, batch: int) -> bool:
        """Whether a local run of ``steps`` steps is cheaper grouped (see ``grouped_max_ratio``)."""
        return steps > 0 and correction_ratio(self.sizes, steps, batch) <= self.grouped_max_ratio

    def grouped_client_bytes(self, steps: int, batch: int) -> int:
        """One client's share of a grouped run: its factors, a step's activations, the aggregator's scaled copy."""
        rows = steps * batch
        factors = sum(rows * (a + b) for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))
        return 4 * (factors + 3 * batch * sum(self.sizes) + rows * max(self.sizes[1:]))

    def train_grouped(self, bases: Params, groups: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      phases: list[tuple[BatchSchedule, LocalSGD]]) -> ClientDeltas:
        """Clients starting from shared base weights, trained together (:func:`fedmtl.grouped.train_grouped`)."""
        return train_grouped(self.layers, bases, groups, x, y, phases)

    def workspace_bytes(self, batch: int) -> int:
        """Temporaries of one deferred block (inputs, W0 @ inputs, gradients, Gram matrix), for memory plans."""
        cols = self.flush_every * batch
        return 4 * (cols * (self.sizes[0] + 2 * self.sizes[1]) + cols * cols)

    def _backward(self, params: Params, c: int, acts: list[torch.Tensor], dz: torch.Tensor, update: set[str],
                  sgd: LocalSGD, *, skip_input_weight: bool = False) -> torch.Tensor:
        """Back-propagate ``dz`` (the output layer's gradient) and apply the updates; returns the input layer's
        pre-activation gradient (what its weight update needs)."""
        for i in range(len(self.layers) - 1, -1, -1):
            w, b = self.layers[i]
            a = acts[i]
            dh = torch.mm(params[w][c].t(), dz) if i > 0 else None  # before the weight moves
            if w in update and not (i == 0 and skip_input_weight):
                self._apply(params, sgd, w, c, dz, a.t())
            if b in update:
                self._apply(params, sgd, b, c, dz.sum(1), None)
            if dh is not None:
                dz = dh.mul_(a > 0)
        return dz

    @staticmethod
    def _apply(params: Params, sgd: LocalSGD, name: str, c: int, left: torch.Tensor,
               right: torch.Tensor | None) -> None:
        """``p -= lr * (grad + mu * (p - anchor))`` for client ``c``, grad = left @ right (weights) or left
        (biases); as in StackedMLP, without momentum the matmul accumulates straight into the weight."""
        param = params[name][c]
        mu = float(sgd.prox[name][c]) if name in sgd.prox else 0.0
        if sgd.momentum == 0.0:
            if mu:
                param.add_(param - sgd.anchors[name][c], alpha=-sgd.lr * mu)
            if right is None:
                param.add_(left, alpha=-sgd.lr)
            else:
                param.addmm_(left, right, alpha=-sgd.lr)
            return
        buf = sgd.buffers[name][c]
        if right is None:
            buf.mul_(sgd.momentum).add_(left)
        else:
            buf.addmm_(left, right, beta=sgd.momentum)
        if mu:
            buf.add_(param - sgd.anchors[name][c], alpha=mu)
        param.add_(buf, alpha=-sgd.lr)
