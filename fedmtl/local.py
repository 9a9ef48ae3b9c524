"""A round's local training for a stack of clients: shared by the in-process engine and the Flower client."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedmtl.backends import Backend, LocalSGD
from fedmtl.config import TrainConfig
from fedmtl.layers import LayerType
from fedmtl.schedule import BatchSchedule

__all__ = ["train_phases", "trainable_names"]

Params = dict[str, torch.Tensor]


def trainable_names(types: dict[str, LayerType]) -> list[str]:
    """Parameters that local SGD may move (everything but pre-trained layers), in model order."""
    return [n for n, t in types.items() if t is not LayerType.PRETRAINED]


def train_phases(backend: Backend, types: dict[str, LayerType], params: Params, x: torch.Tensor, y: torch.Tensor,
                 schedules: Sequence[BatchSchedule], config: TrainConfig, *, prox: Params, anchors: Params,
                 buffers: Params) -> None:
    """Run every local phase of ``config`` on client-stacked ``params`` in place, one schedule per phase.

    One function for both engines, so a client training alone on its own data (Flower) does the same maths as
    the same client trained inside a stack (in-process).
    """
    trainable = trainable_names(types)
    for phase, schedule in zip(config.local_phases(), schedules, strict=True):
        update = [n for n in trainable if types[n].value in phase.layers]
        sgd = LocalSGD(lr=config.lr, momentum=config.momentum, loss=config.loss, update=update, buffers=buffers,
                       prox=prox, anchors=anchors)
        backend.train(params, x, y, schedule, sgd)
