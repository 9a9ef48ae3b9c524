"""Seeds -> latents -> images -> PNG files plus a manifest, resumable and batch-size independent.

Sample ``i`` depends only on (network, its seed, settings): z comes from ``np.random.RandomState(seed)`` as in
the reference ``generate.py``, the generator runs in eval mode (no batch statistics), and ``random`` noise is
drawn from a torch generator seeded by the sample's seed. Every PNG is written under a temporary name and
renamed, and the manifest gains one line per sample only after the batch's PNGs exist, in one append; a
re-run skips samples already in the manifest, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fedmtl.files import atomic_write
from generation.errors import OutputFolderError
from generation.networks import Network
from generation.stylegan2 import NOISE_MODES, StyleGAN2Generator, to_uint8

__all__ = ["MANIFEST", "GenerateResult", "generate", "latents", "parse_seeds", "read_manifest", "render",
           "resolve_device", "sample_id"]

MANIFEST = "manifest.jsonl"
_SETTINGS = ("network_sha256", "psi", "noise_mode", "resolution")


def sample_id(seed: int) -> str:
    return f"seed{seed:07d}"


def parse_seeds(spec: str) -> list[int]:
    """``"0-9,42,100-102"`` -> [0..9, 42, 100, 101, 102] (ranges inclusive, duplicates dropped, order kept)."""
    seeds: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"seed spec {spec!r}: {part!r} is not N or N-M")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"seed spec {spec!r}: range {part} is empty")
        seeds.extend(range(lo, hi + 1))
    if any(s >= 2**32 for s in seeds):
        raise ValueError(f"seed spec {spec!r}: seeds must be below 2**32")
    return list(dict.fromkeys(seeds))


def latents(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """[N, z_dim] float64, row i = ``np.random.RandomState(seeds[i]).randn(1, z_dim)``."""
    return np.concatenate([np.random.RandomState(s).randn(1, z_dim) for s in seeds]) if seeds else np.zeros((0, z_dim))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise OutputFolderError("device cuda: no CUDA device is available (use --device cpu)")
    if device not in ("cpu", "cuda"):
        raise OutputFolderError(f"device {device!r}: expected auto, cpu or cuda")
    return torch.device(device)


@torch.no_grad()
def render(net: Network, seeds: Sequence[int], *, psi: float = 1.0, noise_mode: str | None = None,
           device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Images (NHWC uint8), z (float64) and w (float32, after truncation; None for DCGAN) of ``seeds``."""
    mode = noise_mode or net.default_noise_mode
    gen = net.generator.to(device)
    z = latents(seeds, net.z_dim)
    zt = torch.from_numpy(z).to(device)
    # Subnormal floats (below 1e-38, far under one uint8 level) make CPU arithmetic several times slower.
    torch.set_flush_denormal(True)
    try:
        if isinstance(gen, StyleGAN2Generator):
            ws = gen.map(zt, psi=psi)
            gens = [torch.Generator().manual_seed(int(s)) for s in seeds] if mode == "random" else None
            img = gen.synthesize(ws, mode, generators=gens)
            w = ws[:, 0].cpu().numpy()
        else:
            img, w = gen(zt), None
    finally:
        torch.set_flush_denormal(False)
    return to_uint8(img).cpu().numpy(), z, w


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buf, format="PNG")
    return buf.getvalue()


def read_manifest(out: str | os.PathLike[str], *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of ``OUT/manifest.jsonl``. A torn last line (a run killed mid-append) is dropped (and, with
    ``repair``, removed from the file); a bad line anywhere else is an error."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # after the final newline: b"" unless torn
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "sample_id" not in row:
                raise ValueError("not an object with sample_id")
        except ValueError as exc:
            raise OutputFolderError(f"{path}: line {i} is not a manifest row ({exc})") from None
        rows.append(row)
    if tail and repair:
        atomic_write(path, b"".join(line + b"\n" for line in lines))
    return rows


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write: regular-file appends are not interleaved
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class GenerateResult:
    out: Path
    written: list[str]
    skipped: list[str]


def generate(net: Network, out: str | os.PathLike[str], seeds: Sequence[int], *, psi: float = 1.0,
             noise_mode: str | None = None, batch_size: int | None = None, device: str = "auto",
             progress: bool = True) -> GenerateResult:
    """Write ``OUT/<sample_id>.png`` for each seed and one manifest row per finished sample.

    ``batch_size`` None picks the fastest measured here: 64 for DCGAN; for StyleGAN2 1 on CPU (a 256 px
    image's activations already overflow the caches) and 16 on CUDA.
    """
    mode = noise_mode or net.default_noise_mode
    if net.kind == "dcgan":
        if mode != "none":
            raise OutputFolderError(f"{net.name}: noise mode {mode!r} needs a StyleGAN2 network (DCGAN has none)")
        if psi != 1:
            raise OutputFolderError(f"{net.name}: truncation psi {psi} needs a StyleGAN2 network (use 1)")
    elif mode not in NOISE_MODES:
        raise OutputFolderError(f"noise mode {mode!r}: expected one of {', '.join(NOISE_MODES)}")
    dev = resolve_device(device)
    if batch_size is None:
        batch_size = 64 if net.kind == "dcgan" else (16 if dev.type == "cuda" else 1)
    if batch_size < 1:
        raise OutputFolderError(f"batch size {batch_size}: must be >= 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{out}: exists and is not a folder")
    settings = {"network_sha256": net.sha256, "psi": float(psi), "noise_mode": mode, "resolution": net.resolution}
    rows = read_manifest(out, repair=True)
    for row in rows:
        clash = [k for k in _SETTINGS if row.get(k) != settings[k]]
        if clash:
            raise OutputFolderError(
                f"{out}: already holds samples made with other settings ({', '.join(clash)} of "
                f"{row['sample_id']}: {', '.join(repr(row.get(k)) for k in clash)}); use a new output folder")
    kept = [r for r in rows if (out / str(r.get("file", ""))).is_file()]
    if len(kept) < len(rows):  # rows whose PNG was deleted: forget them, they are generated again
        atomic_write(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in kept).encode())
    done = {r["sample_id"] for r in kept}
    todo = [s for s in seeds if sample_id(s) not in done]
    skipped = [sample_id(s) for s in seeds if sample_id(s) in done]
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(".*.png.tmp-*"):  # PNGs half-written by a killed run
        leftover.unlink(missing_ok=True)
    written: list[str] = []
    with tqdm(total=len(todo), unit="img", desc=f"generate {net.name}", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            pixels, z, w = render(net, batch, psi=psi, noise_mode=mode, device=dev)
            new_rows = []
            for i, seed in enumerate(batch):
                sid = sample_id(seed)
                atomic_write(out / f"{sid}.png", _png(pixels[i]))
                new_rows.append({
                    "sample_id": sid, "file": f"{sid}.png", "seed": int(seed), "network": net.name,
                    "network_sha256": net.sha256, "kind": net.kind, "psi": float(psi), "noise_mode": mode,
                    "resolution": net.resolution, "z": z[i].tolist(),
                    "w": None if w is None else w[i].tolist(), "licence": net.licence,
                })
            _append(out / MANIFEST, new_rows)
            written += [r["sample_id"] for r in new_rows]
            bar.update(len(batch))
    return GenerateResult(out, written, skipped)
