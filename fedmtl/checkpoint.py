"""Atomic checkpoint files: a killed run finds either the previous complete checkpoint or the new one.

Reading one back is the other half: a truncated, foreign or other-version file is one :class:`CheckpointError`
line naming the file (torch's own messages run to a dozen lines), and a file is only ever loaded as data.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedmtl.errors import CheckpointError
from fedmtl.files import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "resume_checkpoint"]


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue(), durable=True)


def _summary(exc: BaseException) -> str:
    """One short line out of an exception whose message may be paragraphs (torch's unpickling errors are)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # the part that says what was refused
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        text = text.split(" was not an allowed global", 1)[0].split(". Please use", 1)[0].strip()
        text = f"it names code to run, refused ({text})" if "GLOBAL" in text else f"not a torch file ({text})"
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint is data, and never gets to run code."""
    try:
        with warnings.catch_warnings():  # torch warns in several lines about some foreign files; the error says it
            warnings.simplefilter("ignore")
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file") from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a torch file?): "
                              f"{type(exc).__name__}: {_summary(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not a fedmtl checkpoint (it holds a {type(state).__name__})")
    return state


def resume_checkpoint(path: str | os.PathLike[str], load_state: Callable[[dict[str, Any]], None],
                      state: dict[str, Any] | None = None) -> None:
    """Load ``path`` and hand it to ``load_state`` (e.g. ``Simulation.load_state_dict``).

    Whatever goes wrong, a wrong format version, a missing entry, a value of the wrong type or shape, is one
    CheckpointError line naming the file, instead of a KeyError or a torch traceback halfway through resuming.
    """
    if state is None:  # ``state``: already read with load_checkpoint (a caller that needed a look first)
        state = load_checkpoint(path)
    try:
        load_state(state)
    except CheckpointError as exc:
        raise CheckpointError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        what = f"no entry {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {_summary(exc)}"
        raise CheckpointError(f"checkpoint {path} does not fit this run ({what}); it was written by another "
                              "version or for another run: use a fresh directory") from None
