"""Request checks in front of the whole labelling server (API and Gradio UI): refuse cross-site requests.

A page on another site (or on another port of the same machine) can make the browser send requests to the
server: plain-text or form POSTs go out without a preflight, and Gradio's own CORS layer answers preflights from
any ``localhost`` origin. ``RequestGuard`` is an ASGI middleware that runs before any route and refuses:

* a ``Host`` the server does not answer to (DNS rebinding: a foreign name resolving to 127.0.0.1);
* an ``Origin`` other than the server's own (``scheme://host:port``), on any method, preflights included, and
  writes that a browser marks as coming from another site (``Sec-Fetch-Site``);
* writes (POST, PUT, PATCH, DELETE) without a valid session token in ``X-Labeling-Token`` (a custom header, which
  no cross-site request can carry without a preflight that is refused), except Gradio's login form;
* API writes whose body is not ``application/json``.

Session tokens (``SessionTokens``) are signed with a key that lives only in the server process: the UI's script
fetches one from ``GET /labeling/api/session`` (same-origin only) and adds it to its own requests; scripts do
the same. ``LoginThrottle`` slows down password guessing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["LoginThrottle", "RequestGuard", "SessionTokens", "TOKEN_HEADER", "TOKEN_SCRIPT", "is_loopback"]

TOKEN_HEADER = "X-Labeling-Token"
SESSION_PATH = "/labeling/api/session"
API_PREFIX = "/labeling/api/"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SessionTokens:
    """Signed, expiring tokens: ``nonce.issued.mac`` with an HMAC key that never leaves this process."""

    def __init__(self, lifetime: float = 24 * 3600.0) -> None:
        self._key = secrets.token_bytes(32)
        self.lifetime = lifetime

    def _mac(self, body: str) -> str:
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self) -> str:
        body = f"{secrets.token_urlsafe(16)}.{int(time.time())}"
        return f"{body}.{self._mac(body)}"

    def valid(self, token: str | None) -> bool:
        if not token or token.count(".") != 2:
            return False
        body, _, mac = token.rpartition(".")
        if not hmac.compare_digest(self._mac(body), mac):
            return False
        try:
            issued = int(body.rpartition(".")[2])
        except ValueError:
            return False
        return 0 <= time.time() - issued <= self.lifetime


class LoginThrottle:
    """After ``limit`` failed logins of one key (a name or a client address) within ``window`` seconds, further
    attempts of that key are refused for ``lockout`` seconds, right password or not."""

    def __init__(self, limit: int = 5, window: float = 300.0, lockout: float = 60.0) -> None:
        self.limit, self.window, self.lockout = limit, window, lockout
        self._failures: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until these keys may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            return max((self._locked.get(k, 0.0) - now for k in keys), default=0.0) if keys else 0.0

    def failed(self, keys: Iterable[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                recent = [t for t in self._failures.get(key, []) if now - t < self.window] + [now]
                self._failures[key] = recent
                if len(recent) >= self.limit:
                    self._locked[key] = now + self.lockout
            if len(self._failures) > 100_000:  # bounded memory under a flood of made-up names
                self._failures.clear()

    def succeeded(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


# The UI's part: fetch a session token once (again after a server restart) and add it to the page's own
# same-origin writes. Runs in <head>, before Gradio's scripts, so every Gradio request goes through it.
TOKEN_SCRIPT = """
<script>
(() => {
  const HEADER = %(header)s, SESSION = %(session)s, SAFE = ['GET', 'HEAD', 'OPTIONS'];
  const plain = window.fetch.bind(window);
  let token = null;
  const fresh = () => (token = plain(SESSION, {credentials: 'same-origin'}).then((r) => r.json()).then((j) => j.token));
  fresh();
  window.fetch = async (input, init) => {
    const req = new Request(input, init);
    if (new URL(req.url, location.href).origin !== location.origin || SAFE.includes(req.method)) return plain(req);
    const send = async (t) => { const r = new Request(req.clone()); r.headers.set(HEADER, t); return plain(r); };
    const reply = await send(await token);
    if (reply.status === 403 && reply.headers.get('X-Labeling-Token-Invalid')) return send(await fresh());
    return reply;
  };
})();
</script>
"""


class RequestGuard:
    """ASGI middleware: the checks in the module docstring, before any route runs."""

    def __init__(self, app: Callable[..., Awaitable[None]], tokens: SessionTokens, *, host: str, tls: bool = False,
                 throttle: LoginThrottle | None = None, login_path: str = "/login") -> None:
        self.app, self.tokens, self.tls, self.throttle = app, tokens, tls, throttle
        self.login_path = login_path
        self.port: int | None = None  # set once the socket is bound (port 0 picks one)
        bind = host.strip("[]").lower()
        if is_loopback(bind):
            self.names: set[str] | None = set(_LOOPBACK_NAMES) | {bind if ":" not in bind else f"[{bind}]"}
        elif bind in ("0.0.0.0", "::", ""):
            self.names = None  # any name this machine is reached by; the Origin must still match it
        else:
            self.names = {bind if ":" not in bind else f"[{bind}]"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message, extra = refusal
            await _reply(send, status, message, extra)
            return
        if scope["method"] == "POST" and scope["path"] == self.login_path and self.throttle is not None:
            await self._throttled_login(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _own_origin(self, host_header: str) -> str:
        return f"{'https' if self.tls else 'http'}://{host_header.lower()}"

    def _host_ok(self, host_header: str) -> bool:
        name, port = _split_host(host_header)
        if self.port is not None and (port or ("443" if self.tls else "80")) != str(self.port):
            return False
        return bool(name) and (self.names is None or name in self.names)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, dict[str, str]] | None:
        method, path = scope["method"], scope["path"]
        host = headers.get("host", "")
        if not self._host_ok(host):
            return 421, f"this server does not answer to host {host!r}", {}
        origin = headers.get("origin")
        if origin is not None and origin.lower() != self._own_origin(host):
            return 403, f"cross-site request from {origin!r} refused", {}
        if method in _SAFE_METHODS:
            return None
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site request refused", {}
        if path.startswith(API_PREFIX):
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                return 415, "the API takes application/json bodies only", {}
        if path != self.login_path and not self.tokens.valid(headers.get(TOKEN_HEADER.lower())):
            return 403, (f"missing or expired session token: GET {SESSION_PATH} and send it in the "
                         f"{TOKEN_HEADER} header"), {"X-Labeling-Token-Invalid": "1"}
        return None

    async def _throttled_login(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Gradio's login form: refuse while the client address is locked out, count its failures."""
        client = f"addr:{(scope.get('client') or ('?', 0))[0]}"
        wait = self.throttle.retry_after([client])
        if wait > 0:
            await _reply(send, 429, "too many failed logins; try again later", {"Retry-After": str(int(wait) + 1)})
            return
        status: list[int] = []

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        if status and status[0] >= 400:
            self.throttle.failed([client])
        elif status:
            self.throttle.succeeded([client])


def _split_host(value: str) -> tuple[str, str]:
    """``("name", "port")`` of a Host header (``[::1]:80`` keeps its brackets); port "" when absent."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else ""
    name, _, port = value.partition(":")
    return name, port


async def _reply(send: Send, status: int, message: str, extra: dict[str, str]) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
