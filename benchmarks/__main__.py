"""``python -m benchmarks``: run every speed benchmark and merge its ratios into ``results/bench.json``.

Each benchmark module runs in a fresh process: a previous one's threads (a stopped web server's helpers), its
memory (the face head's 11 GB) or its children (Ray's workers winding down) must not slow the next one down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from fedmtl.files import atomic_write

# Each module under benchmarks/ exposes ``run() -> dict`` of named results; they run in this order (Flower last:
# Ray's processes take a while to wind down after a run).
BENCHMARKS = ("engine_har", "har_suite", "face_head", "face_round", "generation_speed", "label_save", "flower_har")

_DRIVER = """
import json, sys
from benchmarks import {name} as module
kwargs = json.loads(sys.argv[1])
print("BENCH-RESULT " + json.dumps(module.run(**kwargs)))
"""


def run_isolated(name: str, kwargs: dict) -> dict:
    """``benchmarks.<name>.run(**kwargs)`` in a child process; its progress goes to the terminal."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _DRIVER.format(name=name), json.dumps(kwargs)], env=env,
                          stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH-RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark {name} failed (exit {proc.returncode})")
    return json.loads(lines[-1].removeprefix("BENCH-RESULT "))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--har-suite-rounds", type=int, default=100,
                        help="rounds of the batched HAR suite benchmark (default 100, the paper's; fewer on a busy "
                             "machine: its seconds are then scaled to 100 rounds and its detail says so)")
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
        print(f"benchmark {name} ...", file=sys.stderr, flush=True)
        kwargs = {"engine_har": {"repeats": args.repeats}, "har_suite": {"rounds": args.har_suite_rounds}}
        results.update(run_isolated(name, kwargs.get(name, {})))
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
