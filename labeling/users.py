"""Annotator accounts for ``serve --auth``: a file of scrypt password hashes, never passwords.

One account per line, ``name:scrypt:N:r:p:SALT:HASH`` (base64), ``#`` comments. scrypt is memory-hard (16 MiB
and tens of milliseconds per guess at these settings), so a stolen file is slow to attack. ``Users.check`` takes
the same path for unknown names as for known ones (a dummy hash is checked), so response times do not say which
names exist. ``python -m labeling users add|remove|list`` manages the file; an old file of plain
``name:password`` lines is refused with a line saying how to convert it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from labeling.errors import LabelingError
from labeling.store import validate_annotator

__all__ = ["Users", "add_user", "hash_password", "list_users", "load_users", "remove_user", "verify_password"]

_N, _R, _P, _LEN = 2**14, 8, 1, 32
_PREFIX = "scrypt"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """``scrypt:N:r:p:SALT:HASH`` for a password (a fresh random salt each time)."""
    if not password:
        raise LabelingError("empty password")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_LEN, maxmem=64 * 1024 * 1024)
    return f"{_PREFIX}:{n}:{r}:{p}:{_b64(salt)}:{_b64(digest)}"


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    kind, n, r, p, salt, digest = encoded.split(":")
    if kind != _PREFIX:
        raise ValueError(kind)
    n_, r_, p_ = int(n), int(r), int(p)
    if not (2 <= n_ <= 2**20 and n_ & (n_ - 1) == 0 and 1 <= r_ <= 32 and 1 <= p_ <= 16):
        raise ValueError("scrypt parameters out of range")
    return n_, r_, p_, base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True)


def verify_password(encoded: str, password: str) -> bool:
    """Whether ``password`` matches a ``hash_password`` string (constant-time comparison of the digests)."""
    n, r, p, salt, digest = _parse(encoded)
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=64 * 1024 * 1024)
    return hmac.compare_digest(got, digest)


class Users:
    """The accounts of a users file; ``check`` is what logins call."""

    def __init__(self, hashes: Mapping[str, str]) -> None:
        if not hashes:
            raise LabelingError("no users")
        self.hashes = dict(hashes)
        self._dummy = hash_password(secrets.token_urlsafe(16))
        self._cache_key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_passwords(cls, passwords: Mapping[str, str]) -> Users:
        """Accounts from plain passwords held in memory (tests, scripts); they are hashed here."""
        return cls({validate_annotator(name): hash_password(pw) for name, pw in passwords.items()})

    def names(self) -> list[str]:
        return sorted(self.hashes)

    def check(self, name: str, password: str) -> bool:
        """Whether ``name`` exists and ``password`` is its password.

        Unknown names are checked against a dummy hash, so both cases cost one scrypt. A pair that passed once is
        remembered (as a keyed hash) so that scripts sending Basic credentials with every request do not pay the
        scrypt cost each time; a wrong password or unknown name always pays it.
        """
        name, password = str(name), str(password)
        token = hmac.new(self._cache_key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if token in self._verified:
                return True
        known = name in self.hashes
        ok = verify_password(self.hashes[name] if known else self._dummy, password) and known
        if ok:
            with self._lock:
                self._verified.add(token)
        return ok


def _read(path: Path, *, missing_ok: bool = False) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise LabelingError(f"{path}: no such users file (create one with `python -m labeling users add "
                            f"--file {path} NAME`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelingError(f"{path}: cannot read users file ({getattr(exc, 'strerror', None) or exc})") from None
    users: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        if not sep or not encoded:
            raise LabelingError(f"{path}:{lineno}: expected 'name:scrypt:...' (made by `python -m labeling users "
                                "add`)")
        try:
            validate_annotator(name.strip())
        except LabelingError as exc:
            raise LabelingError(f"{path}:{lineno}: {exc}") from None
        if not encoded.startswith(f"{_PREFIX}:"):
            raise LabelingError(f"{path}:{lineno}: a plain-text password; passwords are stored hashed now: run "
                                f"`python -m labeling users add --file NEWFILE NAME` for each user, then delete "
                                f"{path}")
        try:
            _parse(encoded)
        except (ValueError, TypeError):
            raise LabelingError(f"{path}:{lineno}: malformed scrypt hash for {name.strip()!r}") from None
        users[name.strip()] = encoded
    return users


def load_users(path: str | Path) -> Users:
    """The accounts of a users file (one-line errors for a missing, plain-text or malformed file)."""
    path = Path(path)
    users = _read(path)
    if not users:
        raise LabelingError(f"{path}: no users (add one with `python -m labeling users add --file {path} NAME`)")
    return Users(users)


def _write(path: Path, users: Mapping[str, str]) -> None:
    """Replace the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write("# labeling users: name:scrypt hash (python -m labeling users add|remove|list)\n")
            f.writelines(f"{name}:{encoded}\n" for name, encoded in sorted(users.items()))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_user(path: str | Path, name: str, password: str) -> bool:
    """Add or replace an account; returns True if the name was new."""
    path = Path(path)
    users = _read(path, missing_ok=True)
    new = validate_annotator(name) not in users
    users[name] = hash_password(password)
    _write(path, users)
    return new


def remove_user(path: str | Path, name: str) -> None:
    path = Path(path)
    users = _read(path)
    if name not in users:
        raise LabelingError(f"{path}: no user {name!r}")
    del users[name]
    _write(path, users)


def list_users(path: str | Path) -> list[str]:
    return sorted(_read(Path(path)))
