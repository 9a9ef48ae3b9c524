"""Independent runs as a batch dimension: several simulations trained round by round in lockstep.

A researcher's suite is many runs of one small model (seeds, grid points, regimes). Each run alone leaves most
of a matmul idle; together they fill it. :class:`Lockstep` keeps every :class:`~fedmtl.engine.Simulation`
whole (its generator, sampling, schedules, server state, aggregators, client stores, evaluation, checkpoints)
and only merges the one expensive call: each round, every simulation prepares its chunk's client stacks, then
ONE backend call trains the concatenation of all of them (virtual clients = runs x clients), and each
simulation takes its slice back, folds it into its own aggregators and finishes its own round.

Why the results equal running alone: a backend treats every stacked client independently (per-client
matmuls, per-client loss and update), so a client's arithmetic does not depend on who else is in the stack.
What a backend call shares is kept identical inside a call: the phase's updated parameters, learning rate,
momentum, loss and batch size. Runs that differ there (say two learning rates of a grid) still train in the
same lockstep round, in one call per distinct setting. Per-client values already vary per virtual client:
proximal mu (FedProx) and Ditto's lambda; a run without a proximal term gets mu = 0, which adds exact zeros.
Training rows are indexed through one shared data tensor: identical training sets (seeds and regimes of one
suite, a pooled client holding the same rows) are stored once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedmtl.engine import Simulation
from fedmtl.errors import DivergedError
from fedmtl.local import LocalWork, phase_sgd
from fedmtl.schedule import BatchSchedule

__all__ = ["Lockstep"]

Params = dict[str, torch.Tensor]


def _family(sim: Simulation) -> tuple[Any, ...]:
    """What must match for two simulations to share training data and backend calls: the backend and the maths
    its parameters' shapes do not pin down (a generic module's code), the device and the data's layout."""
    backend = sim.backend
    module = getattr(backend, "head", getattr(backend, "module", None))
    return (type(backend).__name__, repr(getattr(backend, "layers", None)), None if module is None else repr(module),
            str(sim.device), tuple(sim.x_train.shape[1:]), sim.x_train.dtype, tuple(sim.y_train.shape[1:]),
            sim.y_train.dtype)


def _shapes(params: Params) -> tuple[Any, ...]:
    return tuple((n, tuple(t.shape[1:]), t.dtype) for n, t in params.items())


@dataclass
class _Data:
    """The distinct training sets of a family, concatenated; ``offset[sim]`` is where a simulation's rows start."""

    x: torch.Tensor
    y: torch.Tensor
    offset: dict[int, int]


def _pad_steps(schedule: BatchSchedule, steps: int, offset: int) -> BatchSchedule:
    """A schedule with rows shifted by ``offset`` and padded with inactive steps to ``steps``."""
    extra = steps - schedule.steps
    rows, weight, active = schedule.rows + offset, schedule.weight, schedule.active
    if extra:
        c, b = rows.shape[1:]
        rows = torch.cat([rows, torch.full((extra, c, b), offset, dtype=rows.dtype, device=rows.device)])
        weight = torch.cat([weight, weight.new_zeros(extra, c, b)])
        active = torch.cat([active, active.new_zeros(extra, c)])
    return BatchSchedule(rows, weight, active)


class Lockstep:
    """Simulations advanced one round at a time together, their local training merged into shared calls.

    ``run(target)`` trains every simulation that has not failed up to ``target`` rounds (each one evaluates and
    checkpoints itself after each round, exactly as ``Simulation.run`` does); a simulation that diverges is
    recorded in :attr:`failed` and the others go on. Simulations may start at different rounds (resumed
    checkpoints): each round trains those still short of the target.
    """

    def __init__(self, sims: Sequence[Simulation]) -> None:
        self.sims = list(sims)
        self.failed: dict[int, DivergedError] = {}
        self.calls = 0  # backend calls made so far (how far the runs were merged)
        families: dict[tuple[Any, ...], list[int]] = {}
        for i, sim in enumerate(self.sims):
            families.setdefault(_family(sim), []).append(i)
        self.family = {i: key for key, members in families.items() for i in members}
        self.data = {key: self._shared_data(members) for key, members in families.items()}

    def _shared_data(self, members: list[int]) -> _Data:
        """Store each distinct training set once; a simulation with a duplicate then holds the kept copy."""
        kept: list[int] = []
        offset: dict[int, int] = {}
        total = 0
        for i in members:
            sim = self.sims[i]
            for k in kept:
                other = self.sims[k]
                if (other.x_train.shape == sim.x_train.shape and torch.equal(other.x_train, sim.x_train)
                        and torch.equal(other.y_train, sim.y_train)):
                    sim.x_train, sim.y_train = other.x_train, other.y_train  # frees the duplicate
                    offset[i] = offset[k]
                    break
            else:
                kept.append(i)
                offset[i] = total
                total += len(sim.x_train)
        if len(kept) == 1:
            x, y = self.sims[kept[0]].x_train, self.sims[kept[0]].y_train
        else:
            x = torch.cat([self.sims[k].x_train for k in kept])
            y = torch.cat([self.sims[k].y_train for k in kept])
        return _Data(x, y, offset)

    # ------------------------------------------------------------------ the run
    def run(self, target: int) -> dict[int, DivergedError]:
        """Train every live simulation up to ``target`` rounds; returns the failures so far (index -> error)."""
        threads = [s.config.threads for s in self.sims if s.config.threads is not None]
        if threads:
            torch.set_num_threads(max(threads))
        while True:
            active = [i for i, s in enumerate(self.sims) if i not in self.failed and s.round_index < target]
            if not active:
                return self.failed
            self.step(active, target)

    def step(self, active: Sequence[int], target: int | None = None) -> None:
        """One round of the ``active`` simulations; each then evaluates and checkpoints (``after_round``)."""
        start = time.perf_counter()
        chunks: dict[int, list[tuple[torch.Tensor, list[BatchSchedule]]]] = {}
        for i in active:  # a chunk that pays on the grouped path trains there, alone; the rest trains together
            sim, chunks[i] = self.sims[i], []
            try:
                for clients, schedules in sim.begin_round():
                    if not sim.fold_grouped(clients, schedules):
                        chunks[i].extend(sim.model_chunks(clients, schedules))
            except DivergedError as exc:
                self.failed[i] = exc
        active = [i for i in active if i not in self.failed]
        if not active:
            return
        for j in range(max(len(c) for c in chunks.values())):
            members = [i for i in active if j < len(chunks[i]) and i not in self.failed]
            works = {i: self.sims[i].prepare_chunk(*chunks[i][j]) for i in members}
            self._train(works)
            for i in members:
                clients = chunks[i][j][0]
                try:
                    trained = self.sims[i].finish_chunk(clients, works[i])
                except DivergedError as exc:
                    self.failed[i] = exc
                    continue
                self.sims[i].server.fold(clients, trained, in_place=True)
        done = [i for i in active if i not in self.failed]
        for i in done:
            self.sims[i].end_round()
        share = (time.perf_counter() - start) / max(1, len(active))
        for i in done:
            sim = self.sims[i]
            sim.timings.append(share)
            sim.after_round(sim.config.rounds if target is None else target)

    # ------------------------------------------------------------------ merged local training
    def _train(self, works: dict[int, LocalWork]) -> None:
        """Every local phase of every member; per phase, one backend call per group of identical settings."""
        phases = max((len(w.schedules) for w in works.values()), default=0)
        for p in range(phases):
            groups: dict[tuple[Any, ...], list[tuple[int, Any]]] = {}
            for i, work in works.items():
                if p >= len(work.schedules):
                    continue
                sim = self.sims[i]
                sgd = phase_sgd(sim.types, sim.config.local_phases()[p], sim.config, prox=work.prox,
                                anchors=work.anchors, buffers=work.buffers)
                key = (self.family[i], _shapes(work.params), tuple(sgd.update), sgd.lr, sgd.momentum, sgd.loss,
                       work.schedules[p].rows.shape[2])
                groups.setdefault(key, []).append((i, sgd))
            for members in groups.values():
                self.calls += 1
                if len(members) == 1:
                    i, sgd = members[0]
                    sim = self.sims[i]
                    sim.backend.train(works[i].params, sim.x_train, sim.y_train, works[i].schedules[p], sgd)
                else:
                    self._train_together(works, members, p)

    def _train_together(self, works: dict[int, LocalWork], members: list[tuple[int, Any]], p: int) -> None:
        """One backend call on the members' stacks concatenated along the client dimension, then each member's
        slice copied back into its own stacks."""
        first, sgd0 = members[0]
        data = self.data[self.family[first]]
        update = list(sgd0.update)
        ids = [i for i, _ in members]
        sizes = [works[i].schedules[p].rows.shape[1] for i in ids]
        params = {n: torch.cat([works[i].params[n] for i in ids]) for n in works[first].params}
        buffers = ({n: torch.cat([works[i].buffers[n] for i in ids]) for n in update} if sgd0.momentum else {})
        prox_names = sorted({n for i in ids for n in works[i].prox})
        prox, anchors = {}, {}
        for n in prox_names:
            prox[n] = torch.cat([works[i].prox[n] if n in works[i].prox else
                                 torch.zeros(c, device=params[n].device) for i, c in zip(ids, sizes, strict=True)])
            anchors[n] = torch.cat([works[i].anchors[n].expand(c, *params[n].shape[1:]) if n in works[i].anchors
                                    else params[n].new_zeros(c, *params[n].shape[1:])
                                    for i, c in zip(ids, sizes, strict=True)])
        steps = max(works[i].schedules[p].steps for i in ids)
        parts = [_pad_steps(works[i].schedules[p], steps, data.offset[i]) for i in ids]
        schedule = BatchSchedule(torch.cat([s.rows for s in parts], 1), torch.cat([s.weight for s in parts], 1),
                                 torch.cat([s.active for s in parts], 1))
        sgd = type(sgd0)(lr=sgd0.lr, momentum=sgd0.momentum, loss=sgd0.loss, update=update, buffers=buffers,
                         prox=prox, anchors=anchors)
        self.sims[first].backend.train(params, data.x, data.y, schedule, sgd)
        start = 0
        for i, c in zip(ids, sizes, strict=True):
            for n in update:
                works[i].params[n].copy_(params[n][start:start + c])
                if sgd0.momentum:
                    works[i].buffers[n].copy_(buffers[n][start:start + c])
            start += c
