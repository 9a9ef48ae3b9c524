"""A client's personal layers between rounds: Flower's ``Context.state``, mirrored to a file for restarts.

``Context.state`` lives in the SuperNode process, so it is lost when the SuperNode dies. With a ``state-dir``
in the node config, every save is also written atomically (temporary file, then ``os.replace``) to
``<state-dir>/<client id>.pt``, and a client whose context state is empty loads from there before falling back
to the model's initial layers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from flwr.app import Context, MetricRecord

from fedmtl.checkpoint import load_checkpoint
from fedmtl.errors import CheckpointError
from fedmtl.flower.codec import decode_params, encode_params

__all__ = ["load_personal", "save_personal", "STATE_KEY"]

STATE_KEY = "fedmtl.personal"
_META_KEY = "fedmtl.personal-meta"
Params = dict[str, torch.Tensor]


def _state_file(context: Context, client_id: str) -> Path | None:
    directory = context.node_config.get("state-dir")
    return Path(str(directory)) / f"{client_id}.pt" if directory else None


def load_personal(context: Context, client_id: str, initial: Params) -> tuple[Params, str]:
    """The client's personal layers and where they came from: ``context``, ``file`` or ``initial``."""
    if STATE_KEY in context.state:
        return decode_params(context.state[STATE_KEY], initial), "context"
    path = _state_file(context, client_id)
    if path is not None and path.exists():
        stored = load_checkpoint(path)
        for name, like in initial.items():
            value = stored.get(name)
            if not isinstance(value, torch.Tensor) or value.shape != like.shape:
                raise CheckpointError(f"personal state {path} does not fit client {client_id}: layer {name!r} is "
                                      f"{'missing' if value is None else 'of another shape or type'}")
        return {n: stored[n].clone() for n in initial}, "file"
    return {n: t.clone() for n, t in initial.items()}, "initial"


def save_personal(context: Context, client_id: str, personal: Params, round_index: int) -> None:
    context.state[STATE_KEY] = encode_params(personal)
    context.state[_META_KEY] = MetricRecord({"round": round_index})
    path = _state_file(context, client_id)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{client_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({n: t.detach().clone() for n, t in personal.items()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
