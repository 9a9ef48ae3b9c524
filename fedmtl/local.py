"""A round's local training for a stack of clients: shared by the in-process engine and the Flower client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedmtl.backends import Backend, LocalSGD
from fedmtl.config import Phase, TrainConfig
from fedmtl.layers import LayerType
from fedmtl.schedule import BatchSchedule

__all__ = ["LocalWork", "phase_sgd", "train_phases", "trainable_names"]

Params = dict[str, torch.Tensor]


def trainable_names(types: dict[str, LayerType]) -> list[str]:
    """Parameters that local SGD may move (everything but pre-trained layers), in model order."""
    return [n for n, t in types.items() if t is not LayerType.PRETRAINED]


@dataclass
class LocalWork:
    """One chunk's local training, assembled and ready for a backend: what an engine hands to
    :func:`train_phases` (or, for several runs at once, what :mod:`fedmtl.lockstep` concatenates)."""

    params: Params  # client-stacked, trained in place
    prox: Params  # [C] proximal coefficient per parameter
    anchors: Params  # what the proximal term pulls towards
    buffers: Params  # momentum buffers, updated in place
    schedules: list[BatchSchedule]  # one per local phase


def phase_sgd(types: dict[str, LayerType], phase: Phase, config: TrainConfig, *, prox: Params, anchors: Params,
              buffers: Params) -> LocalSGD:
    """The SGD settings of one local phase: which parameters it moves, with the run's lr, momentum and loss."""
    update = [n for n in trainable_names(types) if types[n].value in phase.layers]
    return LocalSGD(lr=config.lr, momentum=config.momentum, loss=config.loss, update=update, buffers=buffers,
                    prox=prox, anchors=anchors)


def train_phases(backend: Backend, types: dict[str, LayerType], params: Params, x: torch.Tensor, y: torch.Tensor,
                 schedules: Sequence[BatchSchedule], config: TrainConfig, *, prox: Params, anchors: Params,
                 buffers: Params) -> None:
    """Run every local phase of ``config`` on client-stacked ``params`` in place, one schedule per phase.

    One function for both engines, so a client training alone on its own data (Flower) does the same maths as
    the same client trained inside a stack (in-process).
    """
    for phase, schedule in zip(config.local_phases(), schedules, strict=True):
        backend.train(params, x, y, schedule, phase_sgd(types, phase, config, prox=prox, anchors=anchors,
                                                        buffers=buffers))
