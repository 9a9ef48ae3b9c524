"""Clients and their local data: the federation an engine trains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedmtl.errors import FedMTLError

__all__ = ["Client", "Federation"]


@dataclass(frozen=True)
class Client:
    """One participant: its id, the task (group) it belongs to and its private train/test data."""

    id: str
    task: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])


class Federation:
    """An ordered, validated set of clients; tasks are the distinct ``Client.task`` values, sorted."""

    def __init__(self, clients: Sequence[Client]) -> None:
        if not clients:
            raise FedMTLError("federation has no clients")
        ids = [c.id for c in clients]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise FedMTLError(f"federation: client id {dup!r} appears twice")
        shape = tuple(clients[0].x_train.shape[1:])
        for c in clients:
            for part in ("train", "test"):
                x, y = getattr(c, f"x_{part}"), getattr(c, f"y_{part}")
                if tuple(x.shape[1:]) != shape:
                    raise FedMTLError(f"client {c.id!r}: x_{part} rows have shape {tuple(x.shape[1:])}, "
                                      f"expected {shape}")
                if x.shape[0] != y.shape[0]:
                    raise FedMTLError(f"client {c.id!r}: x_{part} has {x.shape[0]} rows but y_{part} {y.shape[0]}")
            if c.num_train == 0:
                raise FedMTLError(f"client {c.id!r} has no training data")
        self.clients: tuple[Client, ...] = tuple(clients)
        self.tasks: tuple[str, ...] = tuple(sorted({c.task for c in clients}))
        self.task_index = torch.tensor([self.tasks.index(c.task) for c in clients], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.clients)

    def members(self, task: str) -> list[int]:
        return [i for i, c in enumerate(self.clients) if c.task == task]
