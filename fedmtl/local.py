"""A round's local training for a stack of clients: shared by the in-process engine and the Flower client."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedmtl.backends import Backend, LocalSGD
from fedmtl.config import TrainConfig
from fedmtl.layers import LayerType
from fedmtl.schedule import BatchSchedule

__all__ = ["phase_sgd", "train_phases", "trainable_names"]

Params = dict[str, torch.Tensor]


def trainable_names(types: dict[str, LayerType]) -> list[str]:
    """Parameters that local SGD may move (everything but pre-trained layers), in model order."""
    return [n for n, t in types.items() if t is not LayerType.PRETRAINED]


def phase_sgd(types: dict[str, LayerType], config: TrainConfig, *, prox: Params, anchors: Params,
              buffers: Params) -> list[LocalSGD]:
    """One :class:`LocalSGD` per local phase of ``config``: which parameters move in it, with what."""
    trainable = trainable_names(types)
    return [LocalSGD(lr=config.lr, momentum=config.momentum, loss=config.loss,
                     update=[n for n in trainable if types[n].value in phase.layers], buffers=buffers, prox=prox,
                     anchors=anchors) for phase in config.local_phases()]


def train_phases(backend: Backend, types: dict[str, LayerType], params: Params, x: torch.Tensor, y: torch.Tensor,
                 schedules: Sequence[BatchSchedule], config: TrainConfig, *, prox: Params, anchors: Params,
                 buffers: Params) -> None:
    """Run every local phase of ``config`` on client-stacked ``params`` in place, one schedule per phase.

    One function for both engines, so a client training alone on its own data (Flower) does the same maths as
    the same client trained inside a stack (in-process).
    """
    sgds = phase_sgd(types, config, prox=prox, anchors=anchors, buffers=buffers)
    for sgd, schedule in zip(sgds, schedules, strict=True):
        backend.train(params, x, y, schedule, sgd)
