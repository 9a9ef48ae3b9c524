"""A small HTTP client of the labelling API for scripts and tests: session token, idempotency keys, retries.

Every write carries an ``Idempotency-Key``; when a reply is lost (the server was killed or restarted, the
connection dropped) the same request is sent again with the same key until the deadline, so a save the server
committed before dying is not stored twice and one it never received is stored once. A token made invalid by a
server restart is replaced by a fresh one.
"""

from __future__ import annotations

import ssl
import time
import uuid
from typing import Any

import httpx

from labeling.errors import LabelingError
from labeling.security import SESSION_PATH, TOKEN_HEADER

__all__ = ["LabelingClient", "api_session"]

_LOST = (httpx.TransportError,)  # connection refused / reset / closed before the reply, timeouts


def api_session(url: str, **httpx_kwargs: Any) -> httpx.Client:
    """A plain ``httpx.Client`` for the API that sends a session token with every request and a fresh
    ``Idempotency-Key`` with every POST that has none (for scripts that want raw replies and status codes)."""
    with httpx.Client(base_url=url, **httpx_kwargs) as probe:  # returned unopened, so `with` works on it
        r = probe.get(SESSION_PATH)
    if r.status_code != 200:
        raise LabelingError(f"{url}: no session token ({r.status_code} {r.text[:200]})")
    http = httpx.Client(base_url=url, **httpx_kwargs)
    http.headers[TOKEN_HEADER] = r.json()["token"]

    def key(request: httpx.Request) -> None:
        if request.method == "POST" and "idempotency-key" not in request.headers:
            request.headers["Idempotency-Key"] = uuid.uuid4().hex

    http.event_hooks["request"].append(key)
    return http


class LabelingClient:
    """``LabelingClient("http://127.0.0.1:7860", auth=("alice", "pw")).save("seed0000001", {"pose": 1})``."""

    def __init__(self, url: str, *, auth: tuple[str, str] | None = None, timeout: float = 30.0,
                 retry_for: float = 0.0, verify: bool | str = True) -> None:
        # a path is a CA file (a lab's self-signed certificate); httpx wants it as an SSL context
        context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self.http = httpx.Client(base_url=url, auth=auth, timeout=timeout, verify=context)
        self.retry_for = retry_for  # seconds to keep retrying a write whose reply was lost (0: no retries)
        self.token: str | None = None
        self.retries = 0  # writes sent again after a lost reply (for reports)

    def __enter__(self) -> LabelingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _fresh_token(self) -> str:
        r = self.http.get(SESSION_PATH)
        r.raise_for_status()
        self.token = r.json()["token"]
        return self.token

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = self.http.get(f"/labeling/api/{path}", params=params)
        if r.status_code != 200:
            raise LabelingError(f"GET {path}: {r.status_code} {r.text[:200]}")
        return r.json()

    def write(self, path: str, payload: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
        """POST a JSON write with an idempotency key; retried with the same key when the reply is lost."""
        key = key or uuid.uuid4().hex
        deadline = time.monotonic() + self.retry_for
        delay, refreshed = 0.05, False
        while True:
            try:
                token = self.token or self._fresh_token()
                r = self.http.post(f"/labeling/api/{path}", json=payload,
                                   headers={TOKEN_HEADER: token, "Idempotency-Key": key})
            except _LOST:
                if time.monotonic() > deadline:
                    raise
                self.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            if r.status_code == 403 and r.headers.get("x-labeling-token-invalid") and not refreshed:
                self.token, refreshed = None, True  # the server restarted: its signing key changed
                continue
            if r.status_code != 200:
                raise LabelingError(f"POST {path}: {r.status_code} {r.text[:200]}")
            return r.json()

    def save(self, item_id: str, labels: dict[str, Any], *, annotator: str | None = None,
             key: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"item_id": item_id, "labels": labels}
        if annotator is not None:
            payload["annotator"] = annotator
        return self.write("save", payload, key=key)

    def mark(self, item_id: str, kind: str, *, annotator: str | None = None, key: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"item_id": item_id, "kind": kind}
        if annotator is not None:
            payload["annotator"] = annotator
        return self.write("mark", payload, key=key)

    def undo(self, *, annotator: str | None = None, key: str | None = None) -> dict[str, Any]:
        return self.write("undo", {} if annotator is None else {"annotator": annotator}, key=key)
