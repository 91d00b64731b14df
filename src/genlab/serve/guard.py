"""Safety of `genlab serve`, in one place (the app's routes stay plain):

* Host header check against DNS rebinding: a page on evil.example whose name is re-pointed at
  127.0.0.1 reaches the server with `Host: evil.example`; only the bound host and the loopback names
  are answered (the defence the Chromium/Jupyter servers use; OWASP "DNS rebinding").
* Origin check on POST: a browser always sends Origin on a cross-site POST; one not naming an allowed
  host is refused (CSRF). Scripts (curl, httpx) send none and are let through.
* Token: bound to a non-loopback address, every /api and /docs request needs the per-launch random
  token (`?token=`, header X-Genlab-Token, or the cookie the page gets), compared in constant time.
* Body limit: Content-Length over the limit -> 413 before a byte is read; a chunked body is counted
  as it arrives and cut at the limit.
* Model queue: one worker thread runs every model call (torch models are not re-entrant, and one at
  a time keeps memory flat); at most `queue` calls wait, the next get 503 + Retry-After.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

from fastapi import HTTPException

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
TOKEN_HEADER = "x-genlab-token"
TOKEN_COOKIE = "genlab_token"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _hostname(netloc: str) -> str:
    """'127.0.0.1:8000' / '[::1]:80' / 'Example.com' -> the lower-case host without port."""
    return (urlsplit("//" + netloc).hostname or "").lower()


class Guard:
    """Pure ASGI middleware: Host, Origin, token and body-size checks before the app sees a request.
    Allowed Host names: the loopback names, the bound host, `allow_hosts`; bound to all interfaces
    (0.0.0.0 / ::), also any IP literal (a rebinding attack needs a DNS name; the token still holds)."""

    def __init__(self, app, host: str, token: str | None, max_body: int, allow_hosts=()):
        self.app, self.token, self.max_body = app, token, max_body
        self.all_interfaces = host in ("0.0.0.0", "::", "")
        self.hosts = {h.lower().strip("[]") for h in (host, *LOOPBACK_NAMES, *allow_hosts)}

    def host_ok(self, host: str) -> bool:
        if host in self.hosts:
            return True
        try:
            ipaddress.ip_address(host)
            return self.all_interfaces
        except ValueError:
            return False

    async def _refuse(self, send, status: int, msg: str) -> None:
        body = json.dumps({"detail": msg}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _token_ok(self, scope, headers: dict) -> bool:
        if self.token is None or not scope["path"].startswith(("/api", "/docs", "/openapi", "/redoc")):
            return True
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        given = given or headers.get(TOKEN_HEADER)
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE and not given:
                given = value
        return bool(given) and secrets.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = _hostname(headers.get("host", ""))
        if not self.host_ok(host):
            return await self._refuse(send, 400, f"Host {host!r} is not served here (DNS rebinding "
                                                 f"guard): use http://127.0.0.1 or --allow-host {host}")
        # a browser's same-origin POST names the page's own origin, i.e. this Host; any other is CSRF
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD") and origin is not None \
                and urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
            return await self._refuse(send, 403, f"cross-site request from {origin} refused")
        if not self._token_ok(scope, headers):
            return await self._refuse(send, 401, "missing or wrong token: open the address with ?token= "
                                                 "that genlab serve printed when it started")
        if scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return await self._refuse(send, 400, "bad Content-Length")
        if length > self.max_body:  # refused before a byte of it is read
            return await self._refuse(send, 413, f"request body of {length:,} bytes is over the "
                                                 f"{self.max_body:,}-byte limit")
        body, more = b"", True  # chunked bodies: counted as they arrive, cut at the limit
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await self._refuse(send, 413, f"request body over the {self.max_body:,}-byte limit")
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def again():
            return replay.pop() if replay else await receive()

        return await self.app(scope, again, send)


class Worker:
    """One thread for every model call; at most `queue` calls waiting, then 503."""

    def __init__(self, queue: int = 32):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="genlab-model")
        self.queue, self.waiting = queue, 0  # touched only from the event loop's thread

    async def run(self, fn, *args):
        if self.waiting >= self.queue:
            raise HTTPException(503, f"busy: {self.waiting} model calls already queued; retry shortly",
                                headers={"Retry-After": "1"})
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self.waiting -= 1

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
