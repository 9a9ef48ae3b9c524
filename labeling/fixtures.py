"""Tiny synthetic face images and a generation-style manifest, for tests, benchmarks and demos.

Drawn with Pillow: an oval face, two eyes, a nose that is centred (front-facing) or shifted (sideways) and a
mouth that is dark or white (teeth showing). Cheap, deterministic, and real PNG files in the generation
package's folder format (``<sample_id>.png`` plus ``manifest.jsonl``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["make_faces"]


def _face(rng: random.Random, size: int, front: bool, teeth: bool) -> Image.Image:
    bg = tuple(rng.randint(20, 90) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    s = size / 64
    skin = (rng.randint(170, 235), rng.randint(130, 190), rng.randint(100, 160))
    shift = 0 if front else rng.choice((-1, 1)) * rng.uniform(6, 9)
    d.ellipse([14 * s + shift / 2, 8 * s, 50 * s + shift / 2, 58 * s], fill=skin)
    for ex in (24, 40):
        d.ellipse([(ex - 3) * s + shift / 3, 24 * s, (ex + 3) * s + shift / 3, 29 * s], fill=(30, 30, 40))
    nx = 32 * s + shift
    d.polygon([(nx, 28 * s), (nx - 3 * s, 38 * s), (nx + 3 * s, 38 * s)], fill=tuple(c - 40 for c in skin))
    mouth = (245, 245, 240) if teeth else (110, 30, 40)
    d.rectangle([25 * s + shift / 2, 44 * s, 39 * s + shift / 2, 49 * s], fill=mouth)
    return img


def make_faces(out: str | Path, n: int = 20, *, size: int = 64, seed: int = 0,
               network: str = "test-faces") -> list[dict]:
    """Write ``n`` PNGs and ``manifest.jsonl`` to ``out``; returns the manifest records (with their truth)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = []
    for k in range(n):
        front, teeth = (k % 2 == 0), (k % 3 == 0)
        sample_id = f"seed{k:07d}"
        _face(rng, size, front, teeth).save(out / f"{sample_id}.png")
        records.append({"sample_id": sample_id, "file": f"{sample_id}.png", "seed": k, "network": network,
                        "network_sha256": "0" * 64, "psi": 1.0, "noise_mode": "const", "resolution": size,
                        "z": [0.0] * 4, "w": None, "licence": "CC0 test images drawn by labeling.fixtures",
                        "truth": {"pose": int(front), "teeth": int(teeth)}})
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records
