"""Cross-site requests are refused: a page on another origin (another loopback port, or another site) cannot save
labels, whether it sends a plain-text "simple request" (no preflight) or JSON; files kept in the image folder that
are not images (the database, a users file) are never served."""

from __future__ import annotations

import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import playwright.sync_api as playwright_api

from labeling import LabelStore, load_catalog
from labeling.app import LabelingApp
from tests.labeling.test_browser import CHROMIUM, CHROMIUM_ARGS

SAVE = '{"item_id": "seed0000000", "annotator": "mallory", "labels": {"gender": 1}}'


def _rows(db: Path) -> int:
    return sqlite3.connect(db).execute("SELECT COUNT(*) FROM labels").fetchone()[0]


def test_plain_text_post_from_another_site_is_refused(tmp_path: Path, faces: Path, server_factory) -> None:
    db = tmp_path / "labels.sqlite"
    app = LabelingApp(LabelStore(db), load_catalog(faces, progress=False), suggestions=False, progress=False)
    server = server_factory(app)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for headers in ({"Content-Type": "text/plain", "Origin": "http://evil.example"},
                        {"Content-Type": "text/plain"},
                        {"Content-Type": "application/json", "Origin": "http://evil.example"},
                        {"Content-Type": "application/json", "Origin": "http://127.0.0.1:1"},
                        {"Content-Type": "application/json", "Host": "evil.example"}):
            r = http.post("/labeling/api/save", content=SAVE, headers=headers)
            assert r.status_code in (403, 415, 421), (headers, r.status_code, r.text)
        # gradio's own routes too: its CORS middleware would otherwise let any localhost origin in
        r = http.post("/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"},
                      headers={"Origin": "http://127.0.0.1:1"})
        assert r.status_code == 403, r.text
        r = http.options("/gradio_api/queue/join", headers={"Origin": "http://127.0.0.1:1",
                                                           "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
    assert _rows(db) == 0


def test_files_beside_the_images_are_not_served(tmp_path: Path, faces: Path, server_factory) -> None:
    """The database and a users file kept in the image folder cannot be downloaded through any route."""
    db = faces / "labels.sqlite"
    app = LabelingApp(LabelStore(db), load_catalog(faces, progress=False), suggestions=False, progress=False)
    (faces / "users.txt").write_text("alice:secret\n")
    server = server_factory(app)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for name in ("labels.sqlite", "users.txt", "manifest.jsonl", "seed0000000.png"):
            path = (faces / name).resolve()
            for route in (f"/gradio_api/file={path}", f"/file={path}", f"/gradio_api/file={faces}/../faces/{name}"):
                r = http.get(route)
                assert r.status_code in (403, 404), (route, r.status_code)
                assert b"SQLite format" not in r.content and b"secret" not in r.content
        for item in ("labels", "labels.sqlite", "users", "manifest"):
            assert http.get(f"/labeling/api/image/{item}").status_code in (400, 404)


class _EvilPage(BaseHTTPRequestHandler):
    """Serves one page that tries to save a label on the labelling server (its URL in the query string)."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>evil</title><p>hello</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


_ATTACK = """async ([target, body]) => {
  const out = [];
  const tries = [
    ['text/plain no-cors', {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body}],
    ['form no-cors', {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                      body}],
    ['json cors', {method: 'POST', mode: 'cors', credentials: 'include',
                   headers: {'Content-Type': 'application/json'}, body}],
    ['json cors token', {method: 'POST', mode: 'cors', headers: {'Content-Type': 'application/json',
                                                                 'X-Labeling-Token': 'guess'}, body}],
  ];
  for (const [name, init] of tries) {
    try { const r = await fetch(target + '/labeling/api/save', init); out.push(name + ': ' + r.type + ' ' + r.status); }
    catch (e) { out.push(name + ': ' + e.name); }
  }
  try { const r = await fetch(target + '/labeling/api/session', {mode: 'cors'}); out.push('session: ' + r.status + ' '
        + (await r.text()).slice(0, 80)); }
  catch (e) { out.push('session: ' + e.name); }
  return out;
}"""


def test_a_page_on_another_loopback_origin_cannot_save(tmp_path: Path, faces: Path, server_factory) -> None:
    db = tmp_path / "labels.sqlite"
    app = LabelingApp(LabelStore(db), load_catalog(faces, progress=False), suggestions=False, progress=False)
    server = server_factory(app)
    evil = ThreadingHTTPServer(("127.0.0.1", 0), _EvilPage)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(server.url, wait_until="load")  # a visit first: any cookie the app sets is now present
                page.goto(f"http://127.0.0.1:{evil.server_address[1]}/", wait_until="load")
                outcome = page.evaluate(_ATTACK, [server.url, SAVE])
                for line in outcome:  # an opaque no-cors reply says nothing; what matters is the row count
                    assert not line.endswith(" 200") or "opaque" in line, outcome
                assert not any(line.startswith("session: 200") for line in outcome), outcome
            finally:
                browser.close()
    finally:
        evil.shutdown()
        evil.server_close()
    assert _rows(db) == 0
