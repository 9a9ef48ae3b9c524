"""What travels in Flower messages: named tensors and one client's batch schedules, as ArrayRecords.

Pure conversions, no Flower state. Tensors are sent in the backend's native layout (both sides use the same
backend), so nothing is transposed on the way.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedmtl.schedule import BatchSchedule

__all__ = ["encode_params", "decode_params", "client_schedules", "encode_schedules", "decode_schedules"]

Params = dict[str, torch.Tensor]


def encode_params(params: Params) -> ArrayRecord:
    """Named tensors as an ArrayRecord (a copy: later in-place updates of ``params`` do not leak into it)."""
    return ArrayRecord({n: Array(np.ascontiguousarray(t.detach().cpu().numpy())) for n, t in params.items()})


def decode_params(record: ArrayRecord, names: Iterable[str] | None = None) -> Params:
    """Tensors back from an ArrayRecord; with ``names``, exactly those (KeyError if one is missing)."""
    keys = list(record.keys()) if names is None else list(names)
    return {n: torch.from_numpy(record[n].numpy().copy()) for n in keys}


def client_schedules(schedules: list[BatchSchedule], column: int) -> list[BatchSchedule]:
    """One client's part (column ``column``) of client-stacked schedules, trimmed to its own steps: what the
    client would have trained on inside the stack."""
    out = []
    for s in schedules:
        steps = int(s.active[:, column].sum())
        out.append(BatchSchedule(rows=s.rows[:steps, column: column + 1].clone(),
                                 weight=s.weight[:steps, column: column + 1].clone(),
                                 active=s.active[:steps, column: column + 1].clone()))
    return out


def encode_schedules(schedules: list[BatchSchedule]) -> ArrayRecord:
    """Single-client schedules (rows local to the client) as small arrays: rows (int64) and weights."""
    arrays: dict[str, Array] = {}
    for i, s in enumerate(schedules):
        if s.rows.shape[1] != 1:
            raise ValueError("encode_schedules takes single-client schedules (see client_schedules)")
        arrays[f"rows.{i}"] = Array(s.rows[:, 0].numpy())
        arrays[f"weight.{i}"] = Array(s.weight[:, 0].numpy())
    return ArrayRecord(arrays)


def decode_schedules(record: ArrayRecord) -> list[BatchSchedule]:
    phases = sorted(int(k.split(".", 1)[1]) for k in record if k.startswith("rows."))
    out = []
    for i in phases:
        rows = torch.from_numpy(record[f"rows.{i}"].numpy().copy()).unsqueeze(1)
        weight = torch.from_numpy(record[f"weight.{i}"].numpy().copy()).unsqueeze(1)
        out.append(BatchSchedule(rows=rows, weight=weight, active=torch.ones(rows.shape[:2], dtype=torch.bool)))
    return out
