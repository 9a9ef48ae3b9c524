"""Save-to-next-image latency of the labelling server over its HTTP API (label_save_p95_ms).

One annotator labels 200 faces in a row the way the browser does: POST the five labels, get the next item (with
its suggestions: landmarks and the active-learning classifier, retrained every 10 labels) in the reply, then
GET that item's image. Each step is timed from sending the save to having the next image's bytes. The server
(API plus Gradio UI) runs in this process on 127.0.0.1 over 250 synthetic 64x64 faces; SQLite commits with
``synchronous=FULL``, so every save is on disk before the reply.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]


def run(saves: int = 200, images: int = 250) -> dict[str, Any]:
    from labeling import LabelStore, load_catalog
    from labeling.app import LabelingApp, start_server
    from labeling.client import api_session
    from labeling.fixtures import make_faces

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "faces"
        make_faces(folder, images)
        app = LabelingApp(LabelStore(Path(tmp) / "labels.sqlite"), load_catalog(folder, progress=False),
                          annotator="bench", progress=False)
        server = start_server(app, "127.0.0.1", 0)
        try:
            times = []
            with api_session(server.url, timeout=60) as http:  # session token; a fresh Idempotency-Key per save
                item = http.get("/labeling/api/next").json()
                http.get(item["image"])
                for k in range(saves + 5):  # the first 5 warm up (dlib model load, first classifier fit)
                    labels = {"gender": k % 2, "age_group": 1, "glasses": int(k % 7 == 0), "pose": (k // 2) % 2,
                              "teeth": int(k % 3 == 0)}
                    start = time.perf_counter()
                    reply = http.post("/labeling/api/save", json={"item_id": item["item_id"], "labels": labels})
                    reply.raise_for_status()
                    item = reply.json()["next"]
                    http.get(item["image"]).raise_for_status()
                    if k >= 5:
                        times.append((time.perf_counter() - start) * 1000)
        finally:
            server.stop()
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return {"label_save_p95_ms": p95, "label_save_p50_ms": statistics.median(times),
            "label_saves_per_s": 1000 / statistics.mean(times)}


if __name__ == "__main__":
    print(run())
