"""``python -m benchmarks``: run every speed benchmark and merge its ratios into ``results/bench.json``."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from benchmarks import engine_har, flower_har
from fedmtl.files import atomic_write


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-flower", action="store_true", help="skip the Flower simulation comparison (~1 min)")
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update(engine_har.run(repeats=args.repeats))
    if not args.skip_flower:
        results.update(flower_har.run())
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
