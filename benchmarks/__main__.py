"""``python -m benchmarks``: run every speed benchmark and merge its ratios into ``results/bench.json``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
from pathlib import Path

import torch

from fedmtl.files import atomic_write

# Each module under benchmarks/ exposes ``run() -> dict`` of named results; they run in this order.
BENCHMARKS = ("engine_har", "flower_har", "face_head", "label_save", "generation_speed")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in chosen:
        module = importlib.import_module(f"benchmarks.{name}")
        kwargs = {"repeats": args.repeats} if name == "engine_har" else {}
        results.update(module.run(**kwargs))
    results["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__,
                          "python": platform.python_version(), "processor": platform.processor()}
    atomic_write(out, (json.dumps(results, indent=2) + "\n").encode())
    for key, value in results.items():
        if isinstance(value, float):
            print(f"{key:>28}: {value:.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
