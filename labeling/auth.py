"""Annotator accounts for ``serve --auth``: a plain file of ``name:password`` lines (``#`` comments)."""

from __future__ import annotations

import hmac
from pathlib import Path

from labeling.errors import LabelingError
from labeling.store import validate_annotator

__all__ = ["load_users", "check_password"]


def load_users(path: str | Path) -> dict[str, str]:
    """``{name: password}`` from the users file; names must be valid annotator names."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise LabelingError(f"{path}: cannot read users file ({exc.strerror})") from None
    users = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        if not sep or not password:
            raise LabelingError(f"{path}:{lineno}: expected 'name:password'")
        try:
            users[validate_annotator(name.strip())] = password
        except LabelingError as exc:
            raise LabelingError(f"{path}:{lineno}: {exc}") from None
    if not users:
        raise LabelingError(f"{path}: no users")
    return users


def check_password(users: dict[str, str], name: str, password: str) -> bool:
    """Constant-time comparison, so response times do not leak how much of a password matched."""
    expected = users.get(name)
    return expected is not None and hmac.compare_digest(expected.encode(), password.encode())
