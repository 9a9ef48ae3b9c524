"""Which samples each client trains on at each local step: shared by every backend so they see the same batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BatchSchedule", "make_schedule"]


@dataclass(frozen=True)
class BatchSchedule:
    """Local SGD steps of one round for C clients, padded to the longest client.

    ``rows[s, c, b]`` indexes the flat training tensor; ``weight[s, c, b]`` is 1/(valid rows of that batch) or 0 for
    padding, so that a weighted sum of per-sample losses is each client's batch mean. ``active[s, c]`` is False once
    a client has run all its steps: it must then leave its weights and optimiser state untouched.
    """

    rows: torch.Tensor  # int64 [S, C, B]
    weight: torch.Tensor  # float32 [S, C, B]
    active: torch.Tensor  # bool [S, C]

    @property
    def steps(self) -> int:
        return int(self.rows.shape[0])

    def client_steps(self) -> torch.Tensor:
        return self.active.sum(0)

    def select(self, start: int, stop: int) -> BatchSchedule:
        """Clients ``start:stop`` only (a streamed chunk), without the trailing steps none of them takes."""
        active = self.active[:, start:stop]
        steps = int(active.sum(0).max()) if active.numel() else 0
        return BatchSchedule(self.rows[:steps, start:stop], self.weight[:steps, start:stop], active[:steps])

    def to(self, device: torch.device) -> BatchSchedule:
        return BatchSchedule(self.rows.to(device), self.weight.to(device), self.active.to(device))

    def repeat_clients(self, times: int) -> BatchSchedule:
        """The same batches for ``times`` copies of every client (Ditto trains two models on one stream)."""
        return BatchSchedule(self.rows.repeat(1, times, 1), self.weight.repeat(1, times, 1),
                             self.active.repeat(1, times))


def make_schedule(
    sizes: torch.Tensor, offsets: torch.Tensor, batch_size: int, epochs: int, generator: torch.Generator
) -> BatchSchedule:
    """E epochs of mini-batches per client, each epoch a fresh permutation drawn from ``generator``.

    A client's epochs run back to back (its steps are a single stream), exactly as a per-client loop would run
    them, so the vectorised engine and a plain loop follow identical trajectories.
    """
    sizes = sizes.to(torch.int64)
    clients = int(sizes.numel())
    per_epoch = (sizes + batch_size - 1) // batch_size
    steps = int((per_epoch * epochs).max()) if clients else 0
    rows = torch.zeros(steps, clients, batch_size, dtype=torch.int64)
    valid = torch.zeros(steps, clients, batch_size, dtype=torch.bool)
    for c in range(clients):
        n, nb = int(sizes[c]), int(per_epoch[c])
        if n == 0:
            continue
        perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(epochs)])
        padded = torch.full((epochs, nb * batch_size), -1, dtype=torch.int64)
        padded[:, :n] = perms
        padded = padded.view(epochs * nb, batch_size)
        ok = padded >= 0
        rows[: epochs * nb, c] = torch.where(ok, padded + int(offsets[c]), 0)
        valid[: epochs * nb, c] = ok
    counts = valid.sum(-1, keepdim=True)
    weight = valid.float() / counts.clamp(min=1)
    return BatchSchedule(rows=rows, weight=weight, active=counts.squeeze(-1) > 0)
