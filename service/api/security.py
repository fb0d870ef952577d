"""What keeps browsers' pages of other sites out, token or not.

- **Host.** A DNS-rebinding page is served from the attacker's name, which then resolves to
  127.0.0.1: its requests reach us as same-origin, with `Host: attacker.example`. Only our own
  names are accepted (`allowed_hosts`).
- **Origin.** A page of another site can still send a form POST to us (no preflight for
  form content types, and `Sec-Fetch-Site: cross-site`). A request that changes something
  and comes from another origin is refused, whatever its token: browsers send cookies and
  stored credentials, not our bearer token, but the refusal costs nothing and holds without one.
- **Headers.** Every answer says `nosniff` and sends no referrer; HTML pages get a
  Content-Security-Policy with no inline script and may not be framed.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CrossSiteGuard", "HostGuard", "LOOPBACK_HOSTS", "SecurityHeaders", "allowed_hosts", "send_json_error"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The dashboard: scripts and styles of our own only; plotly sets styles inline and draws
# WebGL charts through regl, which compiles its draw calls with `new Function` ('unsafe-eval').
PAGE_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
               "form-action 'self'; frame-ancestors 'none'")
# Swagger UI and ReDoc start from an inline script that FastAPI writes.
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
               "base-uri 'none'; frame-ancestors 'none'")
# Anything else (JSON, CSV, PNG, SVG): nothing runs; an SVG opened alone keeps its own styles.
DATA_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"
DOCS_PATHS = ("/docs", "/redoc")


def allowed_hosts(api_host: str, extra: list[str]) -> list[str]:
    """The Host names we answer to: the loopback names, the address the API listens on (unless it is
    every address, which names no host) and those the settings add."""
    hosts = [*LOOPBACK_HOSTS, *extra]
    if api_host not in WILDCARD_ADDRESSES:
        hosts.append(api_host)
    return list(dict.fromkeys(hosts))


def host_name(host_header: str) -> str:
    """`example.org:8000` → `example.org`; `[::1]:8000` → `::1`."""
    return (urlsplit(f"//{host_header}").hostname or "").lower()


class HostGuard:
    """Answers 400 to a request whose Host is not one of ours (Starlette's TrustedHostMiddleware cannot
    read an IPv6 Host such as `[::1]:8000`)."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.hosts = {host.lower() for host in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = host_name(Headers(scope=scope).get("host", ""))
            if host not in self.hosts and "*" not in self.hosts:
                await send_json_error(send, 400, f"this API does not answer to the host {host!r}; "
                                         "add it to GRADSWEEP_ALLOWED_HOSTS to serve it")
                return
        await self.app(scope, receive, send)


class CrossSiteGuard:
    """Answers 403 to a request that changes something (any method but GET, HEAD and OPTIONS) from
    another site's page: `Sec-Fetch-Site` other than same-origin or none (typed by the user), or,
    for browsers that do not send it, an `Origin` other than ours or one CORS allows."""

    def __init__(self, app: ASGIApp, trusted_origins: list[str]) -> None:
        self.app = app
        self.trusted = {origin.rstrip("/").lower() for origin in trusted_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and self._cross_site(scope):
            await send_json_error(send, 403, "a change from another site's page is refused")
            return
        await self.app(scope, receive, send)

    def _cross_site(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() in self.trusted:
            return False
        site = headers.get("sec-fetch-site")
        if site is not None:
            return site not in ("same-origin", "none")
        if origin is None:
            return False  # not a browser's cross-site request: curl, httpx, our CLI
        ours = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
        return origin.rstrip("/").lower() != ours


class SecurityHeaders:
    """Adds the headers above to every answer, with the policy that fits its kind."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                html = headers.get("content-type", "").startswith("text/html")
                policy = (DOCS_POLICY if path.startswith(DOCS_PATHS) else PAGE_POLICY) if html else DATA_POLICY
                headers.setdefault("Content-Security-Policy", policy)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if html:
                    headers.setdefault("X-Frame-Options", "DENY")
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def send_json_error(send: Send, status: int, detail: str) -> None:
    """Answers with `{"detail": ...}` from a middleware, before any route runs."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
