"""The labelling server: one state object shared by the Gradio UI and a small JSON HTTP API.

``LabelingApp`` owns the store, the catalog and the suggestions; ``build_ui`` makes the Gradio Blocks (per-image
mode with keyboard shortcuts, grid mode); ``build_api`` the HTTP routes (used by scripts, the concurrency test
and the latency benchmark); ``start_server`` mounts both on one FastAPI app served by uvicorn in a thread.
"""

import base64
import json
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import gradio as gr
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from labeling.attributes import CANT_TELL, AttributeSet
from labeling.errors import LabelingError
from labeling.images import Catalog, ImageStage
from labeling.machine import MachineSuggestions
from labeling.security import SESSION_PATH, TOKEN_HEADER, TOKEN_SCRIPT, LoginThrottle, RequestGuard, SessionTokens
from labeling.stopping import (
    StopSignal,
    block_stop_signals,
    note_stop_signals,
    unblock_stop_signals,
    wait_stop_signal,
)
from labeling.store import LabelStore, validate_annotator
from labeling.suggest import (
    ActiveLearner,
    Suggestion,
    deepface_available,
    deepface_suggestions,
    image_features,
)
from labeling.users import Users

__all__ = ["LabelingApp", "Server", "build_api", "build_ui", "serve_forever", "start_server", "stop_on_signals"]

GRID_PAGE = 40
RETRAIN_EVERY = 10
PREFETCH = 2


class LabelingApp:
    """Shared state of a labelling session: store, catalog, suggestion sources, the active-learning order."""

    def __init__(self, store: LabelStore, catalog: Catalog, *, annotator: str = "annotator",
                 users: Users | None = None, suggestions: bool = True, progress: bool = True) -> None:
        self.store, self.catalog, self.attributes = store, catalog, store.attributes
        self.annotator = validate_annotator(annotator)
        self.users = users
        self.tokens, self.throttle = SessionTokens(), LoginThrottle()
        self.stage: ImageStage | None = None  # copies of the images for the UI (made by build_ui)
        store.add_items(catalog.ids())
        self.ids = [i for i in store.items() if i in catalog.items]
        self.notices: list[str] = []
        self.failures: dict[str, int] = {}  # suggestion source -> faces it failed on
        self.learner: ActiveLearner | None = None
        self.use_deepface = False
        self.machine: MachineSuggestions | None = None
        if suggestions:
            self._setup_suggestions(progress)
        self._labels_seen = -1
        self._order = list(self.ids)
        self._order_lock = threading.Lock()
        self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="labeling-prefetch")
        self._prefetched: set[str] = set()

    def _setup_suggestions(self, progress: bool) -> None:
        from tqdm import tqdm

        names = set(self.attributes.names)
        self.machine = MachineSuggestions(self.store, self.notices)
        if not self.machine.attributes:
            self.machine = None
        why = deepface_available()
        self.use_deepface = why is None and {"gender", "age_group"} <= names
        if why and {"gender", "age_group"} <= names:
            self.notices.append(f"deepface suggestions (gender, age) off: {why}")
        features = {i: image_features(self.catalog.items[i].path)
                    for i in tqdm(self.ids, desc="image features", unit="img", disable=not progress, leave=False)}
        self.learner = ActiveLearner(self.attributes, features)

    # -- ordering and suggestions ------------------------------------------------------------------------------
    def order(self) -> list[str]:
        """Item order for everyone: least certain first once the classifier has labels to learn from.

        The classifier is refit in a background thread every ``RETRAIN_EVERY`` saves (any annotator's), so a save never
        waits for it; until the refit is done the previous order is used.
        """
        if self.learner is None:
            return self.ids
        count = self.store.save_count()
        stale = count - self._labels_seen >= RETRAIN_EVERY or self._labels_seen < 0
        if stale and self._order_lock.acquire(blocking=False):
            self._labels_seen = count

            def refit() -> None:
                try:
                    if self.learner.fit(self.store):
                        self._order = self.learner.order(self.ids)
                finally:
                    self._order_lock.release()

            threading.Thread(target=refit, name="labeling-refit", daemon=True).start()
        return self._order

    def close(self) -> None:
        """Stop the background work: queued suggestion prefetches are dropped, so a stopping server exits at once
        instead of finishing them, and a running refit is waited for. The refit thread is a daemon: left running,
        it met the interpreter's shutdown (a refit importing scikit-learn then printed a traceback)."""
        self._prefetcher.shutdown(wait=False, cancel_futures=True)
        self.wait_for_refit()
        if self.stage is not None:
            self.stage.close()

    def login(self, name: str, password: str, client: str | None = None) -> bool | None:
        """Check a login; None while this name (or client address) is locked out after failed tries."""
        if self.users is None:
            return False
        keys = [f"user:{name}"] + ([f"addr:{client}"] if client else [])
        if self.throttle.retry_after(keys) > 0:
            return None
        ok = self.users.check(name, password)
        (self.throttle.succeeded if ok else self.throttle.failed)(keys)
        return ok

    def wait_for_refit(self, timeout: float = 30.0) -> None:
        """Block until a running refit is done (tests and scripts that want the newest order)."""
        if self._order_lock.acquire(timeout=timeout):
            self._order_lock.release()

    def suggestions(self, item_id: str) -> dict[str, Suggestion]:
        """The most confident suggestion per attribute over the available sources (computed ones are cached)."""
        best: dict[str, Suggestion] = {}
        cached = self.store.suggestions(item_id)
        sources = {source for _, _, source, _, _ in cached}
        rows = []
        path = self.catalog.items[item_id].path
        if self.machine is not None:
            for name, s in self.machine.for_item(item_id, path).items():
                best[name] = s
        for source, enabled, fn in (("deepface", self.use_deepface, deepface_suggestions),):
            if enabled and source not in sources:
                try:
                    fresh = fn(path)
                except Exception as exc:  # a face the model cannot handle just gets no suggestion
                    if source not in self.failures:
                        print(f"{source} suggestions failed on {item_id} ({type(exc).__name__}: {exc}); "
                              "such faces get none", file=sys.stderr)
                    self.failures[source] = self.failures.get(source, 0) + 1
                    continue
                rows += [(item_id, name, s.source, s.value, s.confidence) for name, s in fresh.items()]
        if rows:
            self.store.put_suggestions(rows)
            cached += rows
        candidates = [Suggestion(value, confidence, source) for _, _, source, value, confidence in cached]
        names = [name for _, name, _, _, _ in cached]
        if self.learner is not None:
            for name, s in self.learner.predict([item_id]).get(item_id, {}).items():
                names.append(name)
                candidates.append(s)
        for name, s in zip(names, candidates, strict=True):
            if name in self.attributes.names and (name not in best or s.confidence > best[name].confidence):
                best[name] = s
        return best

    def shown_rows(self, item_id: str, annotator: str) -> list[tuple[str, str, str, int, float]]:
        """The suggestions this person sees pre-selected for an item (attributes they have not labelled yet)."""
        current = self.store.current(item_id, annotator)
        return [(item_id, name, s.source, s.value, s.confidence) for name, s in self.suggestions(item_id).items()
                if name not in current]

    # -- actions (shared by UI and API) ------------------------------------------------------------------------
    def next_item(self, annotator: str) -> str | None:
        """The annotator's next item; suggestions for the few after it are computed in the background."""
        found = self.store.next_items(annotator, self.order(), limit=1 + PREFETCH)
        if self.machine is not None or self.use_deepface:
            for item_id in found[1:]:
                if item_id not in self._prefetched:
                    self._prefetched.add(item_id)
                    self._prefetcher.submit(self.suggestions, item_id)
        return found[0] if found else None

    def progress(self, annotator: str) -> dict[str, int]:
        p = self.store.progress(annotator)
        return {"mine": p.mine, "everyone": p.everyone, "total": len(self.ids)}

    def grid_page(self, annotator: str, attribute: str, size: int = GRID_PAGE) -> list[str]:
        """Items this annotator has not labelled for ``attribute`` (nor skipped), least certain first."""
        self.attributes[attribute]
        done = {label.item_id for label in self.store.labels(annotator) if label.attribute == attribute}
        done |= self.store.marked(annotator)
        return [i for i in self.order() if i not in done][:size]


# -- HTTP API --------------------------------------------------------------------------------------------------
def build_api(app: LabelingApp):
    """JSON routes under ``/labeling/api``; with users configured, HTTP Basic auth names the annotator."""
    router = APIRouter(prefix="/labeling/api")

    def who(request: Request, claimed: object = None) -> str:
        if app.users is None:
            name = claimed if claimed is not None else request.query_params.get("annotator", app.annotator)
            try:
                return validate_annotator(name)
            except LabelingError as exc:
                raise HTTPException(400, str(exc)) from None
        header = request.headers.get("authorization", "")
        try:
            scheme, _, encoded = header.partition(" ")
            name, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            scheme, name, password = "", "", ""
        ok = app.login(name, password, request.client.host if request.client else None) \
            if scheme.lower() == "basic" else False
        if ok is None:
            raise HTTPException(429, "too many failed logins; try again later",
                                headers={"Retry-After": str(int(app.throttle.lockout))})
        if not ok:
            raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Basic"})
        if claimed is not None and claimed != name:
            raise HTTPException(403, f"annotator {claimed!r} does not match the login {name!r}")
        return name

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(400, "request body is not JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "request body must be a JSON object")
        return data

    def guarded(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LabelingError as exc:
            raise HTTPException(400, str(exc)) from None

    def request_key(request: Request) -> str:
        """The Idempotency-Key of a write: a retry with the same key gets the first reply, nothing is stored twice."""
        key = request.headers.get("idempotency-key")
        if key is None:
            raise HTTPException(400, "missing Idempotency-Key header (a fresh random string per save; send the "
                                     "same one again when retrying)")
        return key

    def item_payload(item_id: str | None, annotator: str) -> dict[str, Any]:
        if item_id is None:
            return {"item_id": None}
        return {"item_id": item_id, "image": f"/labeling/api/image/{item_id}",
                "suggestions": {k: {"value": s.value, "confidence": s.confidence, "source": s.source}
                                for k, s in app.suggestions(item_id).items()},
                "current": app.store.current(item_id, annotator)}

    @router.get("/items")
    def items(request: Request) -> dict[str, Any]:
        who(request)
        return {"items": app.ids, "skipped": [{"file": f, "reason": r} for f, r in app.catalog.skipped],
                "attributes": {a.name: list(a.values) for a in app.attributes}}

    @router.get("/next")
    def next_(request: Request) -> dict[str, Any]:
        annotator = who(request)
        return {**item_payload(app.next_item(annotator), annotator), "progress": app.progress(annotator)}

    @router.get("/progress")
    def progress(request: Request) -> dict[str, Any]:
        return app.progress(who(request))

    @router.get(SESSION_PATH.removeprefix("/labeling/api"))
    def session() -> dict[str, str]:
        """A session token for the writes (the request guard lets only same-origin pages read it)."""
        return {"token": app.tokens.issue(), "header": TOKEN_HEADER}

    @router.post("/save")
    async def save(request: Request) -> dict[str, Any]:
        data = await body(request)
        annotator = who(request, data.get("annotator"))
        save_id = await run_in_threadpool(guarded, app.store.save, data.get("item_id"), annotator,
                                          data.get("labels"), key=request_key(request))
        nxt = await run_in_threadpool(app.next_item, annotator)
        return {"save_id": save_id, "next": await run_in_threadpool(item_payload, nxt, annotator)}

    @router.post("/mark")
    async def mark(request: Request) -> dict[str, Any]:
        data = await body(request)
        annotator = who(request, data.get("annotator"))
        return {"save_id": guarded(app.store.mark, data.get("item_id"), annotator, data.get("kind"),
                                   key=request_key(request))}

    @router.post("/undo")
    async def undo(request: Request) -> dict[str, Any]:
        data = await body(request)
        return {"items": guarded(app.store.undo, who(request, data.get("annotator")), key=request_key(request))}

    @router.get("/image/{item_id}")
    def image(item_id: str, request: Request):
        who(request)
        path = guarded(app.catalog.served_path, item_id)
        return FileResponse(path, media_type="image/png" if path.suffix.lower() == ".png" else None)

    router.add_api_route("/health", lambda: JSONResponse({"ok": True}), methods=["GET"])
    return router


# -- Gradio UI -------------------------------------------------------------------------------------------------
_KEYS_JS = """
<script>
(() => {
  const KEYS = %s;
  const click = (sel) => { const el = document.querySelector(sel); if (el) el.click(); return !!el; };
  const visible = (sel) => { const el = document.querySelector(sel); return !!el && el.offsetParent !== null; };
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && !['radio', 'checkbox'].includes(t.type)))) return;
    if (visible('#grid-page')) {
      if (e.key === 'Enter' && !(t && t.closest && t.closest('#grid'))) { e.preventDefault(); click('#grid-save'); }
      if (e.key.toLowerCase() === 'x' && t && t.closest && t.closest('#grid')) {  // can't tell for the focused face
        const thumbs = Array.from(document.querySelectorAll('#grid .thumbnail-item'));
        const index = thumbs.indexOf(t.closest('.thumbnail-item'));
        const box = document.querySelector('#grid-cant-tell textarea, #grid-cant-tell input');
        if (index >= 0 && box) {
          e.preventDefault();
          box.value = index + ':' + Date.now();
          box.dispatchEvent(new Event('input', {bubbles: true}));
        }
      }
      return;
    }
    if (!visible('#per-image')) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    let done = false;
    if (key in KEYS) {
      const [name, index] = KEYS[key];
      const radios = document.querySelectorAll('#attr-' + name + ' input[type="radio"]');
      if (radios[index]) { radios[index].click(); done = true; }
    } else if (key === 'Enter') done = click('#btn-save');
    else if (key === 'Backspace' || key === 'u') done = click('#btn-undo');
    else if (key === 's') done = click('#btn-skip');
    else if (key === 'f') done = click('#btn-flag');
    if (done) { e.preventDefault(); if (document.activeElement) document.activeElement.blur(); }
  });
})();
</script>
"""

_CSS = """
#face img { width: 100%; height: 100%; object-fit: contain; }
.low-confidence { color: #b45309; font-weight: 600; }
.offscreen { position: absolute !important; left: -10000px !important; width: 1px !important; height: 1px !important; }
"""


def _keymap(attributes: AttributeSet) -> dict[str, tuple[str, int]]:
    """Key -> (attribute, radio index); the can't-tell radio comes after the values."""
    keys = {key.lower(): (a.name, k) for a in attributes for k, key in enumerate(a.keys)}
    keys.update({a.cant_tell_key.lower(): (a.name, len(a.values)) for a in attributes if a.cant_tell_key})
    return keys


def build_ui(app: LabelingApp):
    """The Gradio Blocks: per-image mode (keyboard) and grid mode (one attribute over a page of faces)."""
    attributes = list(app.attributes)

    def annotator_of(request: gr.Request | None) -> str:
        name = getattr(request, "username", None) if request is not None else None
        return name or app.annotator

    def progress_text(annotator: str) -> str:
        p = app.progress(annotator)
        return (f"**{annotator}** · mine **{p['mine']} / {p['total']}** · everyone's **{p['everyone']} / "
                f"{p['total']}**")

    stage = app.stage = app.stage or ImageStage(app.catalog, gradio_upload_folder())

    def new_key() -> str:
        """The idempotency key of the next write from this view: a double press saves once."""
        return uuid.uuid4().hex

    def view(item_id: str | None, annotator: str, status: str = ""):
        """Outputs for one item: id, image, one radio update per attribute, progress, status, write key."""
        if item_id is None:
            radios = [gr.update(value=None, info="") for _ in attributes]
            return ["", None, *radios, progress_text(annotator), status or "All items are done. Thank you!",
                    new_key()]
        current = app.store.current(item_id, annotator)
        suggested = app.suggestions(item_id)
        radios = []
        for a in attributes:
            s = suggested.get(a.name)
            info = "keys " + " / ".join(f"{key}={v}" for key, v in zip(a.keys, a.values, strict=True))
            info += f" / {a.cant_tell_key}=can't tell" if a.cant_tell_key else ""
            if s is not None:
                mark = " ⚠ unsure" if s.low else ""
                info += f" · suggested {a.label_of(s.value)} ({s.confidence:.0%}, {s.source}){mark}"
            value = current.get(a.name, s.value if s is not None else None)
            radios.append(gr.update(value=value, info=info))
        return [item_id, stage.path(item_id), *radios, progress_text(annotator), status, new_key()]

    def on_load(request: gr.Request):
        annotator = annotator_of(request)
        return view(app.next_item(annotator), annotator)

    def on_save(data: dict, request: gr.Request):
        item_id, values = data[item_box], [data[r] for r in radios]
        annotator = annotator_of(request)
        if not item_id:
            return view(app.next_item(annotator), annotator)
        missing = [a.name for a, v in zip(attributes, values, strict=True) if v is None]
        if missing:
            return view(item_id, annotator, f"Choose a value for: {', '.join(missing)}")
        app.store.save(item_id, annotator, {a.name: v for a, v in zip(attributes, values, strict=True)},
                       key=data[key_state], shown=app.shown_rows(item_id, annotator))
        return view(app.next_item(annotator), annotator, f"saved {item_id}")

    def on_mark(kind: str):
        def handler(item_id: str, key: str, request: gr.Request):
            annotator = annotator_of(request)
            if item_id:
                app.store.mark(item_id, annotator, kind, key=key)
            return view(app.next_item(annotator), annotator, f"{kind}ped {item_id}" if kind == "skip"
                        else f"flagged {item_id} for review")
        return handler

    def on_undo(key: str, request: gr.Request):
        annotator = annotator_of(request)
        items = app.store.undo(annotator, key=key)
        if not items:
            return view(app.next_item(annotator), annotator, "nothing to undo")
        return view(items[0], annotator, f"undid the last save ({len(items)} item(s))")

    # -- grid mode: the page state is [[item_id, suggested value or None, confidence or None], ...] --
    def grid_view(attribute: str, page: list, values: list[int], annotator: str, status: str = ""):
        a = app.attributes[attribute]
        gallery = []
        for (item_id, suggested, confidence, *rest), v in zip(page, values, strict=True):
            sure = rest[0] if rest else None
            caption = a.label_of(v)
            if suggested == v:  # still the suggestion: say how sure it was, mark the doubtful ones
                caption += f" {confidence:.0%}" + (" ⚠" if sure is False else "")
            gallery.append((stage.path(item_id), caption))
        head = (f"{len(page)} faces · click a face (or Tab to it and press Enter) to switch it to the next value "
                "(then can't tell) · x on a focused face: can't tell · Enter elsewhere or **Save page** writes all "
                "of them") if page else \
            "No faces left to label for this attribute."
        return gallery, page, values, head, progress_text(annotator), status

    def grid_load(attribute: str, request: gr.Request):
        annotator = annotator_of(request)
        page, values = [], []
        for item_id in app.grid_page(annotator, attribute):
            s = app.suggestions(item_id).get(attribute)
            page.append([item_id, s.value, s.confidence, not s.low] if s is not None else [item_id, None, None, None])
            values.append(s.value if s is not None else 0)
        return (*grid_view(attribute, page, values, annotator), new_key())

    def grid_toggle(attribute: str, page: list, values: list[int], evt: gr.SelectData, request: gr.Request):
        values = list(values)
        cycle = [*range(len(app.attributes[attribute].values)), CANT_TELL]
        if evt.index is not None and 0 <= evt.index < len(values):
            values[evt.index] = cycle[(cycle.index(values[evt.index]) + 1) % len(cycle)]
        return grid_view(attribute, page, values, annotator_of(request))

    def grid_cant_tell(attribute: str, page: list, values: list[int], command: str, request: gr.Request):
        values = list(values)
        index = command.partition(":")[0]
        if index.isdigit() and int(index) < len(values):
            values[int(index)] = CANT_TELL
        return grid_view(attribute, page, values, annotator_of(request))

    def grid_save(attribute: str, page: list, values: list[int], key: str, request: gr.Request):
        annotator = annotator_of(request)
        if page:
            current = {label.item_id for label in app.store.labels(annotator) if label.attribute == attribute}
            shown = [(p[0], attribute, app.suggestions(p[0])[attribute].source, p[1], p[2]) for p in page
                     if p[1] is not None and p[0] not in current and attribute in app.suggestions(p[0])]
            app.store.save_many(annotator, [(p[0], {attribute: v}) for p, v in zip(page, values, strict=True)],
                                key=key, shown=shown)
        status = f"saved {len(page)} {attribute} labels" if page else "nothing to save"
        *nxt, _, next_key = grid_load(attribute, request)
        return (*nxt, status, next_key)

    notices = [f"Skipped {len(app.catalog.skipped)} unreadable file(s): "
               + ", ".join(f"{name} ({reason})" for name, reason in app.catalog.skipped)] if app.catalog.skipped else []
    notices += app.notices

    with gr.Blocks(title="labeling") as blocks:
        gr.Markdown("## Face attributes")
        gr.Markdown("\n\n".join(notices), elem_id="notices", visible=bool(notices))
        progress = gr.Markdown(elem_id="progress")
        with gr.Tabs():
            with gr.Tab("Per image", elem_id="per-image"), gr.Row():
                with gr.Column(scale=3):
                    image = gr.Image(type="filepath", elem_id="face", height=448, interactive=False,
                                     show_label=False)
                with gr.Column(scale=2):
                    item_box = gr.Textbox(label="item", elem_id="item-id", interactive=False)
                    radios = [gr.Radio(choices=[*((v, k) for k, v in enumerate(a.values)), ("can't tell", CANT_TELL)],
                                       label=a.name, elem_id=f"attr-{a.name}") for a in attributes]
                    with gr.Row():
                        save_btn = gr.Button("Save ⏎", variant="primary", elem_id="btn-save")
                        undo_btn = gr.Button("Undo (u)", elem_id="btn-undo")
                        skip_btn = gr.Button("Skip (s)", elem_id="btn-skip")
                        flag_btn = gr.Button("Flag (f)", elem_id="btn-flag")
                    status = gr.Markdown(elem_id="status")
            with gr.Tab("Grid", elem_id="grid-page") as grid_tab:
                with gr.Row():
                    grid_attr = gr.Dropdown(choices=[a.name for a in attributes], value=attributes[0].name,
                                            label="attribute", elem_id="grid-attr")
                    grid_save_btn = gr.Button("Save page ⏎", variant="primary", elem_id="grid-save")
                grid_head = gr.Markdown(elem_id="grid-head")
                gallery = gr.Gallery(columns=8, allow_preview=False, elem_id="grid", show_label=False,
                                     height="auto", object_fit="contain")
                grid_status = gr.Markdown(elem_id="grid-status")
                grid_command = gr.Textbox(elem_id="grid-cant-tell", elem_classes="offscreen", show_label=False)
                page_state, values_state = gr.State([]), gr.State([])
        key_state, grid_key = gr.State(""), gr.State("")  # idempotency keys of the next per-image / grid write

        outputs = [item_box, image, *radios, progress, status, key_state]
        blocks.load(on_load, None, outputs)
        save_btn.click(on_save, {item_box, *radios, key_state}, outputs)
        undo_btn.click(on_undo, [key_state], outputs)
        skip_btn.click(on_mark("skip"), [item_box, key_state], outputs)
        flag_btn.click(on_mark("flag"), [item_box, key_state], outputs)
        grid_outputs = [gallery, page_state, values_state, grid_head, progress, grid_status]
        grid_tab.select(grid_load, [grid_attr], [*grid_outputs, grid_key])
        grid_attr.change(grid_load, [grid_attr], [*grid_outputs, grid_key])
        gallery.select(grid_toggle, [grid_attr, page_state, values_state], grid_outputs)
        grid_command.change(grid_cant_tell, [grid_attr, page_state, values_state, grid_command], grid_outputs)
        grid_save_btn.click(grid_save, [grid_attr, page_state, values_state, grid_key], [*grid_outputs, grid_key])
    return blocks


# -- server ----------------------------------------------------------------------------------------------------
@dataclass
class Server:
    """A running server (uvicorn in a daemon thread); ``stop()`` ends it."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def gradio_upload_folder() -> str:
    """The folder Gradio serves its own files from (never the image folder: see ``ImageStage``)."""
    from gradio.utils import get_upload_folder

    return get_upload_folder()


def start_server(app: LabelingApp, host: str = "127.0.0.1", port: int = 7860, *, ui: bool = True,
                 quiet: bool = True, ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> Server:
    """Serve the API (and the Gradio UI unless ``ui=False``) on ``host:port`` (port 0: any free port), behind the
    cross-site request checks of ``labeling.security``; HTTPS when given a certificate and its key."""
    import uvicorn

    fastapi_app = FastAPI(title="labeling", docs_url=None, redoc_url=None, openapi_url=None)
    fastapi_app.include_router(build_api(app))
    if ui:
        auth = (lambda name, password: bool(app.login(name, password))) if app.users else None
        head = _KEYS_JS % json.dumps(_keymap(app.attributes))
        head += TOKEN_SCRIPT % {"header": json.dumps(TOKEN_HEADER), "session": json.dumps(SESSION_PATH)}
        fastapi_app = gr.mount_gradio_app(fastapi_app, build_ui(app), path="", auth=auth, ssr_mode=False, head=head,
                                          css=_CSS, footer_links=[])
    guard = RequestGuard(fastapi_app, app.tokens, host=host, tls=bool(ssl_certfile), throttle=app.throttle)
    config = uvicorn.Config(guard, host=host, port=port, log_level="warning" if quiet else "info",
                            timeout_graceful_shutdown=1, ws="none", ssl_certfile=ssl_certfile,
                            ssl_keyfile=ssl_keyfile)
    server = uvicorn.Server(config)
    try:  # bound here, not in the server's thread: a taken port is this caller's one-line error
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                    backlog=2048)
    except OSError as exc:
        raise LabelingError(f"could not start the server on {host}:{port} ({exc.strerror or exc})") from None
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="labeling-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise LabelingError(f"could not start the server on {host}:{port} (it stopped during start-up)")
        time.sleep(0.02)
    bound = guard.port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if ssl_certfile else "http"
    running = Server(f"{scheme}://{shown}:{bound}", server, thread)
    _check_answers(running, scheme, host, bound)
    return running


def _check_answers(server: Server, scheme: str, host: str, port: int) -> None:
    """Ready means answering, not only listening: one request through the whole stack (guard, routes) before
    anyone is told the address. A failure is a start-up error, never retried."""
    import httpx

    probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"{scheme}://{f'[{probe}]' if ':' in probe else probe}:{port}/labeling/api/health"
    try:
        reply = httpx.get(url, timeout=60, verify=False, trust_env=False)  # our own certificate, on this machine
        reply.raise_for_status()
    except httpx.HTTPError as exc:
        server.stop()
        raise LabelingError(f"the server on {host}:{port} did not answer its first request ({exc})") from None


def stop_on_signals() -> None:
    """Make Ctrl-C and SIGTERM stop the server even when the parent process left SIGINT ignored or blocked (a
    job started with ``&`` from a script, or a test runner): both would otherwise leave it running forever.

    Call it before ``start_server``: the two signals are then blocked in the main thread and in every thread the
    server starts, and ``serve_forever`` takes them together with their sender (``labeling.stopping``). Installed
    after the readiness line, as it once was, a Ctrl-C sent in between was ignored."""
    note_stop_signals()
    block_stop_signals()


def serve_forever(server: Server, app: LabelingApp | None = None) -> StopSignal | None:
    """Block until Ctrl-C or SIGTERM (or the thread ends), then stop the server and the app's background work.

    The first line on stderr says which signal stopped the server and which process sent it: seen from its
    clients, a server stopped from outside drops a just-accepted connection without a reply and then refuses the
    next, as a crashed one does. Returns that signal (None: the thread ended)."""
    stop_on_signals()
    main = threading.current_thread() is threading.main_thread()
    stopped: StopSignal | None = None
    try:
        while server.thread.is_alive():
            if not main:
                server.thread.join(0.5)
            elif (stopped := wait_stop_signal(0.5)) is not None:
                print(f"labeling: stopping on {stopped.describe()}", file=sys.stderr, flush=True)
                break
    finally:
        server.stop()
        if app is not None:
            app.close()
        unblock_stop_signals()
    return stopped
