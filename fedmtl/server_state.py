"""What the server of a federation owns, shared by every engine (in-process and Flower).

The server holds the global common layers, one copy of the task layers per task group, one aggregator per
sharing scope and the run's random generator. It samples the clients of a round, draws their batch schedules
and aggregates their trained shared layers. Keeping this in one class is what lets the in-process engine and
the Flower server reach the same result for the same seed: both draw from the same generator in the same
order and aggregate with the same code. Personal layers are not here: they never reach the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedmtl.aggregators import Aggregator
from fedmtl.config import TrainConfig
from fedmtl.federation import Federation
from fedmtl.grouped import ClientDeltas
from fedmtl.layers import LayerType
from fedmtl.schedule import BatchSchedule, make_schedule

__all__ = ["Roster", "ServerState"]

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Roster:
    """What the server knows about the clients: ids, tasks and training-set sizes, no data.

    The in-process engine reads it off its :class:`Federation`; a Flower server learns it from the clients.
    """

    ids: tuple[str, ...]
    client_tasks: tuple[str, ...]
    n_train: torch.Tensor  # int64 [clients]

    @classmethod
    def of(cls, federation: Federation) -> Roster:
        return cls(tuple(c.id for c in federation.clients), tuple(c.task for c in federation.clients),
                   torch.tensor([c.num_train for c in federation.clients], dtype=torch.int64))

    @classmethod
    def build(cls, ids: Sequence[str], tasks: Sequence[str], n_train: Sequence[int]) -> Roster:
        return cls(tuple(ids), tuple(tasks), torch.tensor(list(n_train), dtype=torch.int64))

    @property
    def tasks(self) -> tuple[str, ...]:
        """Distinct tasks, sorted: the same order as :attr:`Federation.tasks`."""
        return tuple(sorted(set(self.client_tasks)))

    @property
    def task_index(self) -> torch.Tensor:
        tasks = self.tasks
        return torch.tensor([tasks.index(t) for t in self.client_tasks], dtype=torch.int64)

    def members(self, task: str) -> list[int]:
        return [i for i, t in enumerate(self.client_tasks) if t == task]

    def __len__(self) -> int:
        return len(self.ids)


class ServerState:
    """Global shared layers, aggregators and the run generator; one round's sampling, schedules and aggregation.

    ``initial`` maps every parameter of the trained model (in the backend's native layout) to its initial
    value; ``types`` gives each its layer type. Only common and task parameters are kept.
    """

    def __init__(self, config: TrainConfig, roster: Roster, types: dict[str, LayerType], initial: Params) -> None:
        self.config = config
        self.roster = roster
        self.types = dict(types)
        self.names = {t: [n for n, nt in self.types.items() if nt is t] for t in LayerType}
        n_tasks = len(roster.tasks)
        self.common: Params = {n: initial[n].clone() for n in self.names[LayerType.COMMON]}
        self.task: Params = {n: initial[n].unsqueeze(0).repeat(n_tasks, *[1] * initial[n].dim())
                             for n in self.names[LayerType.TASK]}
        self.agg_common: Aggregator = config.make_aggregator("common")
        self.agg_task: list[Aggregator] = [config.make_aggregator("task") for _ in roster.tasks]
        self.generator = torch.Generator().manual_seed(config.seed)  # on the CPU: the same draws on every device
        self._task_index = roster.task_index
        self.device = next(iter(initial.values())).device if initial else torch.device("cpu")

    # ------------------------------------------------------------------ sampling and schedules
    def sample_clients(self) -> torch.Tensor:
        """K clients per task group without replacement, from the run's generator (so resumable)."""
        k = self.config.clients_per_task
        chosen: list[int] = []
        for task in self.roster.tasks:
            members = self.roster.members(task)
            if k == "all" or k >= len(members):
                chosen.extend(members)
            else:
                pick = torch.randperm(len(members), generator=self.generator)[:k]
                chosen.extend(members[i] for i in sorted(pick.tolist()))
        return torch.tensor(sorted(chosen), dtype=torch.int64)

    def draw_schedules(self, clients: torch.Tensor, offsets: torch.Tensor | None = None) -> list[BatchSchedule]:
        """One batch schedule per local phase for ``clients``, drawn from the run generator in phase order.

        Rows are local to each client unless ``offsets`` (where each client's rows start in a flat tensor) is
        given. Training does not touch the generator, so drawing all phases up front gives the same stream as
        drawing each phase just before it trains.
        """
        sizes = self.roster.n_train[clients]
        offsets = torch.zeros_like(sizes) if offsets is None else offsets
        return [make_schedule(sizes, offsets, self.config.batch_size, phase.epochs, self.generator)
                for phase in self.config.local_phases()]

    def proximal_mu(self, layer_type: LayerType) -> float:
        """The proximal coefficient clients apply to this layer type (FedProx's mu; 0 otherwise)."""
        if layer_type is LayerType.COMMON:
            return float(self.agg_common.proximal_mu)
        if layer_type is LayerType.TASK and self.agg_task:
            return float(self.agg_task[0].proximal_mu)
        return 0.0

    # ------------------------------------------------------------------ model exchange
    def client_task(self, client: int) -> int:
        return int(self._task_index[client])

    def shared_for(self, clients: torch.Tensor, *, copy: bool) -> Params:
        """Client-stacked shared layers: common broadcast, task gathered by each client's group."""
        c = len(clients)
        tasks = self._task_index[clients.cpu()].to(self.device)
        out: Params = {}
        for n in self.names[LayerType.COMMON]:
            value = self.common[n].expand(c, *self.common[n].shape)
            out[n] = value.clone() if copy else value
        for n in self.names[LayerType.TASK]:
            out[n] = self.task[n].index_select(0, tasks)
        return out

    def scope_size(self, layer_type: LayerType) -> int:
        """Coordinates one client sends for a sharing scope (common, or one task group's layers)."""
        if layer_type is LayerType.COMMON:
            return sum(self.common[n].numel() for n in self.names[LayerType.COMMON])
        return sum(self.task[n][0].numel() for n in self.names[LayerType.TASK])

    def begin_round(self, clients: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Announce the clients whose updates :meth:`fold` will take (in this order, any chunking), weighted by
        ``weights`` (default: the roster's training-set sizes)."""
        weights = self.roster.n_train[clients].float() if weights is None else weights.float()
        tasks = self._task_index[clients]
        self._round = (clients, tasks)
        if self.names[LayerType.COMMON]:
            self.agg_common.begin(self.scope_size(LayerType.COMMON), weights)
        if self.names[LayerType.TASK]:
            for t in tasks.unique().tolist():
                self.agg_task[t].begin(self.scope_size(LayerType.TASK), weights[tasks == t])

    def fold(self, clients: torch.Tensor, params: Params, *, in_place: bool = False) -> None:
        """Hand the trained shared layers of the next ``clients`` (stacked in that order) to the aggregators,
        one tensor at a time: no flattened ``[clients, P]`` matrix is built. With ``in_place`` the common
        layers of ``params`` are turned into deltas where they lie (the caller no longer needs them)."""
        common = self.names[LayerType.COMMON]
        offset = 0
        for n in common:
            local = params[n]
            delta = local.sub_(self.common[n]) if in_place else local - self.common[n]
            self.agg_common.fold(delta.reshape(len(clients), -1), offset)
            offset += self.common[n].numel()
        task_names = self.names[LayerType.TASK]
        if task_names:
            tasks = self._task_index[clients]
            for t in tasks.unique().tolist():
                rows = (tasks == t).nonzero().squeeze(1).to(params[task_names[0]].device)
                offset = 0
                for n in task_names:
                    delta = params[n].index_select(0, rows).sub_(self.task[n][t])
                    self.agg_task[t].fold(delta.reshape(len(rows), -1), offset)
                    offset += self.task[n][t].numel()

    def fold_deltas(self, clients: torch.Tensor, deltas: ClientDeltas) -> None:
        """:meth:`fold` for a backend that left the clients' deltas factored (:class:`ClientDeltas`): each
        factored weight goes to the aggregator as factors where it takes them, materialised where it does not."""
        offset = 0
        for n in self.names[LayerType.COMMON]:
            self._fold_delta(self.agg_common, deltas, n, offset, self.common[n].shape)
            offset += self.common[n].numel()
        task_names = self.names[LayerType.TASK]
        if task_names:
            tasks = self._task_index[clients.cpu()]
            for t in tasks.unique().tolist():
                members = (tasks == t).nonzero().squeeze(1)
                part = deltas if len(members) == len(clients) else deltas.select(members.to(self.device))
                offset = 0
                for n in task_names:
                    self._fold_delta(self.agg_task[t], part, n, offset, self.task[n][t].shape)
                    offset += self.task[n][t].numel()

    def _fold_delta(self, agg: Aggregator, deltas: ClientDeltas, name: str, offset: int, shape: torch.Size) -> None:
        c = deltas.clients
        if name in deltas.factors and hasattr(agg, "fold_factored"):
            agg.fold_factored(*deltas.factors[name], offset)
        elif name in deltas.factors or name in deltas.dense:
            agg.fold(deltas.materialize(name).reshape(c, -1), offset)
        else:  # did not move in any phase
            agg.fold(torch.zeros(c, shape.numel(), device=self.device), offset)

    def finish_round(self) -> None:
        """Add each scope's aggregated step to the global layers (after every chunk has been folded)."""
        clients, tasks = self._round
        common = self.names[LayerType.COMMON]
        if common:
            self._apply_step(self.agg_common.finish(), common, self.common, None)
        task_names = self.names[LayerType.TASK]
        if task_names:
            for t in tasks.unique().tolist():
                self._apply_step(self.agg_task[t].finish(), task_names, self.task, t)
        del self._round

    @staticmethod
    def _apply_step(step: torch.Tensor, names: list[str], target: Params, index: int | None) -> None:
        offset = 0
        for n in names:
            dest = target[n] if index is None else target[n][index]
            size = dest.numel()
            dest.add_(step[offset: offset + size].view_as(dest))
            offset += size

    def aggregate(self, clients: torch.Tensor, params: Params, weights: torch.Tensor | None = None) -> None:
        """Common layers over all ``clients`` (eq. 1), task layers inside each group (eq. 2), sample-weighted.

        ``params`` holds the clients' trained layers stacked in the order of ``clients``; only common and task
        entries are read. ``weights`` defaults to the roster's training-set sizes. The one-chunk form of
        :meth:`begin_round`, :meth:`fold` and :meth:`finish_round`.
        """
        self.begin_round(clients, weights)
        self.fold(clients, params)
        self.finish_round()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "common": self.common,
            "task": self.task,
            "aggregators": {"common": self.agg_common.state_dict(), "task": [a.state_dict() for a in self.agg_task]},
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.common = {n: t.to(self.device, copy=True) for n, t in state["common"].items()}
        self.task = {n: t.to(self.device, copy=True) for n, t in state["task"].items()}
        self.agg_common.load_state_dict(state["aggregators"]["common"])
        for agg, sd in zip(self.agg_task, state["aggregators"]["task"], strict=True):
            agg.load_state_dict(sd)
        self.generator.set_state(state["rng"])
