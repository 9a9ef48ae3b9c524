"""Errors of the generation package; the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

from fedmtl.errors import FedMTLError

__all__ = ["NetworkError", "OutputFolderError"]


class NetworkError(FedMTLError):
    """A network name is unknown, or a network file is missing, corrupt, unsafe or not a supported generator."""


class OutputFolderError(FedMTLError):
    """A generation request cannot be carried out: bad output folder, settings that clash with it, bad device."""
