"""Load a generator by zoo name or file path, whatever its format, and describe it (``info``).

Two file formats are read, neither by running code from the file: stylegan2-ada pickles (through
:mod:`generation.ada_pickle`) and DCGAN checkpoints (a ``torch.save`` dict with ``netG_state_dict``, read with
``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generation.ada_pickle import stylegan2_from_pickle
from generation.dcgan import DCGANGenerator
from generation.errors import NetworkError
from generation.stylegan2 import StyleGAN2Generator
from generation.zoo import DEFAULT_NETWORK, ZOO, fetch, sha256_file

__all__ = ["Network", "describe", "load_network"]

USER_FILE_LICENCE = "user-supplied file: licence not known to the zoo (check the network's own terms)"


@dataclass
class Network:
    """A ready generator (eval mode, float32, on CPU) and what the manifest records about it."""

    name: str
    kind: str  # "dcgan" | "stylegan2"
    generator: nn.Module
    path: Path
    sha256: str
    licence: str
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def z_dim(self) -> int:
        return int(self.generator.z_dim)

    @property
    def w_dim(self) -> int | None:
        return int(self.generator.w_dim) if isinstance(self.generator, StyleGAN2Generator) else None

    @property
    def resolution(self) -> int:
        return int(self.generator.resolution)

    @property
    def default_noise_mode(self) -> str:
        return "const" if self.kind == "stylegan2" else "none"


def _load_dcgan(path: Path) -> DCGANGenerator:
    source = os.fspath(path)
    try:
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise NetworkError(f"{source}: not a loadable torch checkpoint ({first[:200]})") from None
    state = ckpt.get("netG_state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "main.0.weight" not in state or "main.12.weight" not in state:
        raise NetworkError(f"{source}: torch checkpoint has no DCGAN generator (netG_state_dict with main.0..main.12)")
    gen = DCGANGenerator(DCGANGenerator.infer_config(state))
    try:
        gen.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise NetworkError(f"{source}: netG_state_dict does not match the DCGAN generator "
                           f"({' '.join(str(exc).split())[:300]})") from None
    return gen.float().eval()


def _load_file(path: Path) -> tuple[str, nn.Module, dict[str, Any]]:
    if not path.is_file():
        raise NetworkError(f"{path}: not a file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):  # torch.save's zip container
        return "dcgan", _load_dcgan(path), {"format": "torch checkpoint (netG_state_dict)"}
    gen, facts = stylegan2_from_pickle(path)
    return "stylegan2", gen, {"format": "stylegan2-ada pickle", **facts}


def load_network(name_or_path: str | os.PathLike[str] | None = None, *,
                 cache_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> Network:
    """A zoo name (default ``digiface-dcgan``) or a path to a network file."""
    name = os.fspath(name_or_path) if name_or_path is not None else DEFAULT_NETWORK
    if name in ZOO:
        entry = ZOO[name]
        path = fetch(name, cache_dir, progress=progress)
        kind, gen, facts = _load_file(path)
        if kind != entry.kind:
            raise NetworkError(f"{path}: zoo entry {name} should hold a {entry.kind} network, found {kind}")
        return Network(name, kind, gen, path, sha256_file(path), entry.licence,
                       {**facts, "source": entry.source})
    path = Path(name).expanduser()
    if not path.exists():
        raise NetworkError(f"network {name!r}: not a zoo name ({', '.join(ZOO)}) and no such file")
    kind, gen, facts = _load_file(path)
    return Network(path.name, kind, gen, path, sha256_file(path), USER_FILE_LICENCE, facts)


def describe(net: Network) -> dict[str, Any]:
    """What ``python -m generation info`` prints."""
    gen = net.generator
    info: dict[str, Any] = {
        "network": net.name, "kind": net.kind, "file": str(net.path), "sha256": net.sha256,
        "resolution": net.resolution, "img_channels": int(gen.cfg.img_channels), "z_dim": net.z_dim,
        "w_dim": net.w_dim, "parameters": sum(p.numel() for p in gen.parameters()),
        "licence": net.licence,
    }
    if isinstance(gen, StyleGAN2Generator):
        cfg = gen.cfg
        info.update(num_ws=cfg.num_ws, mapping_layers=cfg.mapping_layers, mapping_lr_mul=cfg.mapping_lr_mul,
                    channels={str(r): cfg.channels_for(r) for r in cfg.block_resolutions},
                    conv_clamp=cfg.conv_clamp, noise_inputs=cfg.use_noise)
    info.update({k: v for k, v in net.facts.items() if k not in info})
    return info
