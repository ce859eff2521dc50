"""Security headers on every response (the docs pages get a CSP that lets them render).

Strict-Transport-Security goes on responses served over TLS (scope scheme "https", which
uvicorn also sets from a trusted proxy's X-Forwarded-Proto), and on every response when a
setting says a TLS-terminating proxy is in front. The server's own error responses
(frontend/server/) carry the same headers through `api_headers`.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "interest-cohort=()",
}
_API_CSP = "default-src 'none'; frame-ancestors 'none'"
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; frame-ancestors 'none'"
)
_DOCS = ("/docs", "/redoc", "/openapi.json")


def hsts_value(max_age_s: int) -> str:
    return f"max-age={max_age_s}; includeSubDomains"


def api_headers(hsts: str | None = None) -> list[tuple[bytes, bytes]]:
    """The headers of an API (non-docs) response, for responses written without the app."""
    headers = {**_COMMON, "Content-Security-Policy": _API_CSP, "Cache-Control": "no-store"}
    if hsts is not None:
        headers["Strict-Transport-Security"] = hsts
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


class SecurityHeadersMiddleware:
    def __init__(
        self, app: ASGIApp, hsts_max_age_s: int = 31_536_000, always_hsts: bool = False
    ) -> None:
        self.app = app
        # (max-age 0 is still sent: it tells browsers to forget an earlier policy.)
        self.hsts = hsts_value(hsts_max_age_s)
        self.always_hsts = always_hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = _DOCS_CSP if scope["path"].startswith(_DOCS) else _API_CSP
        hsts = self.always_hsts or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in _COMMON.items():
                    headers[key] = value
                headers["Content-Security-Policy"] = csp
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                if hsts:
                    headers["Strict-Transport-Security"] = self.hsts
            await send(message)

        await self.app(scope, receive, send_with_headers)
