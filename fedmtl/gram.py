"""The input layer of a stacked local run through each client's Gram matrix: exact plain SGD, less than half the FLOPs.

The input layer's input is data, fixed for the whole run, so with plain SGD (no momentum, no proximal pull) a
client's pre-activations for *all* its ``n`` rows can be kept up to date instead of recomputed per batch:

- at the start of the local run ``Z = X W`` (``X``: the client's ``n`` rows, ``[n, in]``), one matmul;
- step ``s`` reads its batch's pre-activations as rows of ``Z``; its update ``W -= lr * a_s^T dz_s`` moves every
  row of ``Z`` by ``-lr * X a_s^T dz_s = -lr * G[:, batch] dz_s`` with ``G = X X^T`` the client's Gram matrix
  (``[n, n]``; the data never change, so it is cached for as long as the same clients train together);
- the weight itself moves once, at the end: ``W -= lr * X^T D`` where ``D`` sums each row's ``dz`` over the run.

Per step that is ``2 n B out`` FLOPs instead of ``4 B in out`` (the batch's forward and weight gradient), and a
batch gathers ``out`` numbers per row instead of ``in``. For the paper's HAR model (601 inputs, 128 outputs,
clients of ~280 windows, batch 32, 5 epochs) the input layer, 87% of the model's FLOPs, costs 2.3 times less.
A pooled client (thousands of rows) would pay more than it saves, so :func:`pays` decides per client, from
sizes only, so that a client takes the same path alone and inside any stack (lockstep runs stay equal to runs
alone). Same maths as step-by-step SGD; only the order of the floating-point sums differs.
"""

from __future__ import annotations

import weakref

import torch

from fedmtl.scratch import Scratch

__all__ = ["GramCache", "InputGram", "client_spans", "path_flops", "pays", "stack_bytes", "MAX_ROWS", "MAX_COST_RATIO"]

# Rows per client above which the path is never taken: its cached Gram matrix (n^2 floats, 64 MiB at 4096 rows)
# would outweigh everything else a client holds.
MAX_ROWS = 4096
# Taken when it costs at most half the direct path's matmul FLOPs: the other half pays for its gathers and the
# scatter of the gradients, and keeps the choice away from cases where the two are close.
MAX_COST_RATIO = 0.5


def path_flops(rows: int, steps: int, batch: int, fan_in: int, fan_out: int, trains: bool = True,
               width: int | None = None) -> tuple[int, int]:
    """A client's input-layer matmul FLOPs over one local run: (on the Gram path, on the direct path).

    On the Gram path ``Z = X W`` and, when the layer trains, ``W -= lr X^T D`` once, plus per step the update of
    the ``width`` rows of ``Z`` it keeps (its own ``rows``, or a stack's padded width); on the direct path each
    step's batch forward and, when it trains, weight gradient. A frozen layer: ``Z = X W`` once against the
    batches' forwards."""
    if not trains:
        return 2 * rows * fan_in * fan_out, 2 * steps * batch * fan_in * fan_out
    kept = rows if width is None else width
    return 4 * rows * fan_in * fan_out + 2 * steps * kept * batch * fan_out, 4 * steps * batch * fan_in * fan_out


def pays(rows: int, steps: int, batch: int, fan_in: int, fan_out: int, trains: bool,
         max_ratio: float = MAX_COST_RATIO) -> bool:
    """Whether a client with ``rows`` training rows and ``steps`` local steps takes the Gram path: its cost is at
    most ``max_ratio`` of the direct path's."""
    if rows <= 0 or steps <= 0 or rows > MAX_ROWS:
        return False
    gram, direct = path_flops(rows, steps, batch, fan_in, fan_out, trains)
    return gram <= max_ratio * direct


def stack_bytes(rows: int, fan_out: int) -> int:
    """One stacked client's working set on the path: Z and D, and its Gram matrix in each of the cached stacks."""
    return 4 * (2 * rows * fan_out + GramCache.keep * rows * rows)


def client_spans(schedule_rows: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per client, the first row it trains on and how many rows its span covers (0 for a client with none).

    ``schedule_rows``/``valid`` are ``[S, C, B]``: a client's rows are one contiguous block of the training tensor
    (:func:`fedmtl.schedule.make_schedule`), and any rows inside the span that it never uses just cost work."""
    big = torch.iinfo(torch.int64).max
    lo = torch.where(valid, schedule_rows, big).amin(dim=(0, 2))
    hi = torch.where(valid, schedule_rows, -1).amax(dim=(0, 2))
    count = (hi - lo + 1).clamp(min=0)
    return torch.where(count > 0, lo, 0), count


class GramCache:
    """The stacked Gram matrices of the last two stacks trained (a federation trains the same stack round after
    round; a lockstep alternates between at most a few). Two stacks at most, so memory plans can count them per
    stacked client (:func:`stack_bytes`)."""

    keep = 2

    def __init__(self) -> None:
        self._stacks: list[tuple[weakref.ref[torch.Tensor], tuple[object, ...], torch.Tensor]] = []

    def stacked(self, x: torch.Tensor, spans: list[tuple[int, int]], width: int) -> torch.Tensor:
        """``[K, width, width]``: client ``c``'s ``X X^T`` (its rows ``x[first:first + rows]``) in the top-left
        corner, zeros around it. The training tensor is matched by identity and version (an in-place write
        invalidates), and kept alive by nobody here."""
        key = (x._version, *spans)
        for i, (ref, spans_of, stack) in enumerate(self._stacks):
            if ref() is x and spans_of == key and stack.shape[1] == width:
                self._stacks.append(self._stacks.pop(i))
                return stack
        stack = x.new_zeros(len(spans), width, width)
        for c, (first, rows) in enumerate(spans):
            if rows:
                block = x[first:first + rows]
                torch.mm(block, block.t(), out=stack[c, :rows, :rows])
        self._stacks = [*self._stacks, (weakref.ref(x), key, stack)][-self.keep:]
        return stack


class InputGram:
    """One stacked local run's input layer on the Gram path (see the module docstring).

    ``weight`` is the stack's ``[K, in, out]`` input weight (StackedMLP's layout); it is read at the start and
    moved once by :meth:`finish`. Clients are the stack's, in its order; ``first``/``rows`` their spans.
    """

    def __init__(self, x: torch.Tensor, first: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor, lr: float,
                 trains: bool, cache: GramCache, scratch: Scratch) -> None:
        clients, width = len(rows), int(rows.max()) if len(rows) else 0
        self.x, self.lr, self.trains = x, lr, trains
        self.spans = list(zip(first.tolist(), rows.tolist(), strict=True))
        self.first = first
        self.offsets = torch.arange(clients, device=x.device) * width
        self.z = scratch.zeros("gram z", (clients, width, weight.shape[2]), like=x)  # [K, n, out]
        for c, (f, n) in enumerate(self.spans):
            if n:
                torch.mm(x[f:f + n], weight[c], out=self.z[c, :n])
        self.gram = self.grad = None
        if trains:
            self.gram = cache.stacked(x, self.spans, width)
            self.grad = scratch.zeros("gram d", self.z.shape, like=x)  # D: each row's summed dz

    def local(self, step_rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Rows of the training tensor as rows of the stacked blocks, flattened: client ``c``'s row ``r`` is
        ``c * width + r`` (padding: the client's row 0, whose gradient is 0)."""
        k = step_rows.shape[0]
        inside = torch.where(valid, step_rows - self.first[:k].unsqueeze(1), 0)
        return (inside + self.offsets[:k].unsqueeze(1)).reshape(-1)

    def pre_activation(self, local: torch.Tensor, k: int) -> torch.Tensor:
        """``a_s W_s`` for the first ``k`` clients' batches (``local`` from :meth:`local`), without the bias."""
        return self.z.view(-1, self.z.shape[2]).index_select(0, local).view(k, -1, self.z.shape[2])

    def step(self, local: torch.Tensor, dz: torch.Tensor) -> None:
        """The weight update of one step, applied to every row's pre-activation and summed into ``D``."""
        if not self.trains:
            return
        assert self.gram is not None and self.grad is not None
        k, width = dz.shape[0], self.gram.shape[1]
        rows = self.gram.view(-1, width).index_select(0, local).view(k, -1, width)  # G[batch, :] = G[:, batch]^T
        self.z[:k].baddbmm_(rows.transpose(1, 2), dz, alpha=-self.lr)
        self.grad.view(-1, dz.shape[2]).index_add_(0, local, dz.reshape(-1, dz.shape[2]))

    def finish(self, weight: torch.Tensor) -> None:
        """``W -= lr * X^T D``: every step's weight update at once."""
        if self.trains:
            assert self.grad is not None
            for c, (f, n) in enumerate(self.spans):
                if n:
                    weight[c].addmm_(self.x[f:f + n].t(), self.grad[c, :n], alpha=-self.lr)
