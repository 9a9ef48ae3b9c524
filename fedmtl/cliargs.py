"""Argument parsing shared by the command lines (``python -m benchmark``, ``generation``, ``labeling``)."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["OneLineParser", "positive_int"]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``error: <what> (see --help)``, and exit status 2.

    argparse's own error prints the whole usage block first (17 lines for ``python -m benchmark``); the
    toolkit's convention is one line naming the bad input, like every other bad input. Subparsers made by
    ``add_subparsers`` inherit the class, so subcommands behave the same; ``--help`` is unchanged.
    """

    def error(self, message: str) -> NoReturn:
        hint = f"{self.prog} --help"
        self.exit(2, f"error: {' '.join(message.split())} (see {hint})\n")


def positive_int(text: str) -> int:
    """An argparse type: argparse turns the error into one usage line naming the flag."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value
