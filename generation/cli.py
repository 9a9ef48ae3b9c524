"""``python -m generation``: make face images from a GAN, inspect network files, list the zoo.

Subcommands: ``generate`` (PNGs + manifest.jsonl into a folder, resumable), ``info`` (what a network file or
zoo entry holds) and ``zoo`` (the known networks with source, checksum, format and licence). Every input is
checked and the network loaded before anything is written; errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from fedmtl.cliargs import OneLineParser, positive_int
from fedmtl.errors import FedMTLError
from generation.networks import describe, load_network
from generation.sampling import generate, parse_seeds
from generation.stylegan2 import NOISE_MODES
from generation.zoo import DEFAULT_NETWORK, ZOO

__all__ = ["build_parser", "main"]


def _seeds(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m generation", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write one PNG per seed plus OUT/manifest.jsonl")
    gen.add_argument("--network", default=DEFAULT_NETWORK,
                     help=f"zoo name or path to a network file (default {DEFAULT_NETWORK}; see `zoo`)")
    gen.add_argument("--out", required=True, help="output folder (re-running into it resumes)")
    which = gen.add_mutually_exclusive_group()
    which.add_argument("-n", "--num", type=positive_int, default=16,
                       help="number of samples, seeds FIRST..FIRST+N-1 (default 16)")
    which.add_argument("--seeds", type=_seeds, help="seed list/ranges, e.g. 0-99,200")
    gen.add_argument("--first-seed", type=int, default=0, help="first seed with --num (default 0)")
    gen.add_argument("--psi", type=float, default=1.0, help="truncation psi (StyleGAN2; default 1)")
    gen.add_argument("--noise-mode", choices=NOISE_MODES,
                     help="StyleGAN2 noise inputs (default const; DCGAN has none)")
    gen.add_argument("--batch-size", type=positive_int,
                     help="images per forward pass (default: 64 for DCGAN; StyleGAN2 1 on CPU, 16 on CUDA)")
    gen.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    gen.add_argument("--cache-dir", help="network cache (default $FEDMTL_CACHE/networks or ~/.cache/fedmtl/networks)")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    info = sub.add_parser("info", help="describe a network file or zoo entry")
    info.add_argument("network", nargs="?", default=DEFAULT_NETWORK, help="zoo name or path")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--cache-dir")
    zoo = sub.add_parser("zoo", help="list the known networks")
    zoo.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _generate(args: argparse.Namespace) -> int:
    if args.first_seed < 0:
        raise FedMTLError(f"--first-seed {args.first_seed}: must be >= 0")
    seeds = args.seeds if args.seeds is not None else list(range(args.first_seed, args.first_seed + args.num))
    net = load_network(args.network, cache_dir=args.cache_dir, progress=not args.no_progress)
    result = generate(net, args.out, seeds, psi=args.psi, noise_mode=args.noise_mode, batch_size=args.batch_size,
                      device=args.device, progress=not args.no_progress)
    print(f"{net.name}: wrote {len(result.written)} image(s), skipped {len(result.skipped)} already done; "
          f"{result.out / 'manifest.jsonl'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    info = describe(load_network(args.network, cache_dir=args.cache_dir))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>15}: {value}")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    rows = [{"name": e.name, "default": e.name == DEFAULT_NETWORK, "kind": e.kind, "resolution": e.resolution,
             "format": e.format, "source": e.source, "sha256": e.sha256 or "recorded at first download",
             "weights_sha256": e.member_sha256 or e.sha256 or "recorded at first download",
             "licence": e.licence, "description": e.description} for e in ZOO.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = " (default)" if r["default"] else ""
        print(f"{r['name']}{mark}: {r['kind']} {r['resolution']}x{r['resolution']} - {r['description']}")
        for key in ("format", "source", "sha256", "weights_sha256", "licence"):
            print(f"    {key:>14}: {r[key]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return {"generate": _generate, "info": _info, "zoo": _zoo}[args.command](args)
    except FedMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
