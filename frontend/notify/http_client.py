"""Delivers one webhook POST, to the address the SSRF check approved and nowhere else.

Every `post` checks the URL again (`ssrf.parse_url` + `ssrf.resolve_checked`), so a name
that has since been pointed at a private address is refused at delivery, then connects to
exactly the address that check returned: httpcore is given a network backend pinned to
that IP, so nothing resolves the name a second time (DNS rebinding between check and
connect), while the Host header, TLS SNI and certificate verification still use the URL's
host name. Each post has its own one-connection pool, so a pin never serves another
request; webhooks are infrequent enough that keep-alive is not worth that risk.

Redirects are never followed (a 3xx is a failed delivery: following one would be a second
request to an unchecked URL), the whole attempt runs under one deadline, and at most
`max_response_bytes` of the answer is read.
"""

from __future__ import annotations

import ssl
import string
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore

from ..notify_settings import NotifySettings
from .ssrf import CheckedUrl, Resolver, UnsafeUrl, parse_url, resolve_checked, system_resolver

# Framing and routing are this client's to set: a caller's value for one of these could
# desynchronise the request or aim it at another virtual host.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
# RFC 9110 token characters: anything else in a header name is a caller's bug.
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
_TRANSPORT_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    httpcore.UnsupportedProtocol,
    OSError,  # ssl.SSLError too
)

_FAILURE_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (httpcore.ConnectError, "connect failed"),  # TLS handshake and certificate too
    (OSError, "connect failed"),
    (httpcore.WriteError, "send failed"),
    (httpcore.ReadError, "read failed"),
    (httpcore.ProtocolError, "protocol error"),
)


@dataclass(frozen=True)
class DeliveryResult:
    """How one attempt went; `error` is None exactly when it was delivered (2xx)."""

    status: int | None  # the HTTP status, None when no response
    latency_ms: float
    error: str | None
    response_excerpt: str  # at most max_response_bytes of the body, decoded leniently
    address: str | None  # the IP connected to (None when none was chosen)
    refused: bool = False  # the SSRF check refused the URL: no connection was made

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to one checked IP whatever host httpcore asks for, for one request."""

    def __init__(self, host: str, port: int, address: str) -> None:
        self._host = host
        self._port = port
        self._address = address
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # The pool is made for one origin; anything else would be a bug, never a reason
        # to connect somewhere unchecked.
        if (host, port) != (self._host, self._port):
            raise httpcore.ConnectError(f"unexpected origin {host}:{port}")
        return await self._inner.connect_tcp(
            self._address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class WebhookClient:
    """Posts webhook deliveries; `post` reports trouble in its result and never raises it."""

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        allow_loopback: bool,
        require_https: bool,
        connect_timeout_s: float,
        timeout_s: float,
        max_response_bytes: int,
        resolve_timeout_s: float = 2.0,
        user_agent: str = "infergate-webhooks/1",
        ssl_context: ssl.SSLContext | None = None,
        max_url_chars: int = 2048,
    ) -> None:
        self._resolver = resolver
        self._allow_loopback = allow_loopback
        self._require_https = require_https
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes
        self._resolve_timeout_s = resolve_timeout_s
        self._user_agent = user_agent
        # The registration check's limit: a URL accepted then must not be refused here.
        self._max_url_chars = max_url_chars
        # Built once: loading the trust store on every delivery would cost milliseconds.
        self._ssl_context = ssl_context or ssl.create_default_context()

    @classmethod
    def from_settings(
        cls, settings: NotifySettings, *, environment: str, resolver: Resolver | None = None
    ) -> WebhookClient:
        """The client the settings describe; https is required in prod unless they say."""
        require_https = (
            settings.require_https if settings.require_https is not None else environment == "prod"
        )
        return cls(
            resolver=resolver or system_resolver,
            allow_loopback=settings.allow_loopback,
            require_https=require_https,
            connect_timeout_s=settings.connect_timeout_s,
            timeout_s=settings.timeout_s,
            max_response_bytes=settings.max_response_bytes,
            resolve_timeout_s=settings.resolve_timeout_s,
            max_url_chars=settings.max_url_chars,
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> DeliveryResult:
        """POST `body` to `url`: checked, resolved and pinned now, under `timeout_s` in all.

        Raises only for a caller's bug (a header that HTTP cannot carry)."""
        started = time.perf_counter()
        _check_headers(headers)
        address: str | None = None
        try:
            with anyio.fail_after(self._timeout_s):
                checked = parse_url(
                    url,
                    require_https=self._require_https,
                    allow_loopback=self._allow_loopback,
                    max_chars=self._max_url_chars,
                )
                address = await resolve_checked(
                    checked,
                    self._resolver,
                    allow_loopback=self._allow_loopback,
                    timeout_s=self._resolve_timeout_s,
                )
                status, excerpt = await self._exchange(checked, address, body, headers)
        except UnsafeUrl as exc:
            return _failure(started, f"refused: {exc}", address=None, refused=True)
        except TimeoutError:  # before the transport errors: it is an OSError
            return _failure(started, f"timed out after {float(self._timeout_s)} s", address)
        except _TRANSPORT_ERRORS as exc:
            return _failure(started, self._describe(exc), address)
        return DeliveryResult(
            status=status,
            latency_ms=_elapsed_ms(started),
            error=_status_error(status),
            response_excerpt=excerpt,
            address=address,
        )

    async def aclose(self) -> None:
        """Nothing to release: every post closes its own connection before returning."""

    async def _exchange(
        self, checked: CheckedUrl, address: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, str]:
        """One request over a fresh connection to `address`: (status, body excerpt)."""
        pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ssl_context,
            max_connections=1,
            keepalive_expiry=0.0,
            retries=0,
            network_backend=_PinnedBackend(checked.host, checked.port, address),
        )
        try:
            async with pool.stream(
                b"POST",
                httpcore.URL(
                    scheme=checked.scheme,
                    host=checked.host,
                    port=checked.port,
                    target=checked.target,
                ),
                headers=self._request_headers(checked, body, headers),
                content=body,
                extensions={"timeout": self._timeouts()},
            ) as response:
                excerpt = await _read_capped(response, self._max_response_bytes)
                return response.status, excerpt
        finally:
            # Shielded and bounded: the connection is closed even when the deadline has
            # just cancelled the exchange, and a stuck close cannot hold the caller.
            with anyio.move_on_after(1.0, shield=True):
                await pool.aclose()

    def _timeouts(self) -> dict[str, float]:
        # Each read and write may take the whole attempt; the outer deadline bounds the sum.
        return {
            "connect": self._connect_timeout_s,
            "read": self._timeout_s,
            "write": self._timeout_s,
            "pool": self._timeout_s,
        }

    def _request_headers(
        self, checked: CheckedUrl, body: bytes, headers: Mapping[str, str]
    ) -> list[tuple[bytes, bytes]]:
        given = {name.lower(): (name, value) for name, value in headers.items()}
        fields = [
            ("Host", _host_header(checked)),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),  # one request per connection (see the module doc)
        ]
        if "content-type" not in given:
            fields.append(("Content-Type", "application/json"))
        if "user-agent" not in given:
            fields.append(("User-Agent", self._user_agent))
        fields += [pair for key, pair in given.items() if key not in _RESERVED_HEADERS]
        return [(name.encode("ascii"), value.encode("ascii")) for name, value in fields]

    def _describe(self, exc: BaseException) -> str:
        """A short reason for a transport failure, without a traceback."""
        if isinstance(exc, httpcore.ConnectTimeout):
            return f"connect timed out after {float(self._connect_timeout_s)} s"
        if isinstance(exc, httpcore.TimeoutException):
            return f"timed out after {float(self._timeout_s)} s"
        detail = str(exc) or type(exc).__name__
        for kind, what in _FAILURE_KINDS:
            if isinstance(exc, kind):
                return f"{what}: {detail}"
        return f"transport error: {detail}"


async def _read_capped(response: httpcore.Response, limit: int) -> str:
    """At most `limit` bytes of the body; the rest is never read (closing the response
    drops the connection instead)."""
    received = bytearray()
    if limit > 0:
        async for chunk in response.aiter_stream():
            received += chunk
            if len(received) >= limit:
                break
    return bytes(received[:limit]).decode("utf-8", errors="replace")


def _check_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not name or not set(name) <= _TOKEN_CHARS:
            raise ValueError(f"invalid header name {name!r}")
        if any(char in value for char in "\r\n\0") or not value.isascii():
            raise ValueError(f"invalid value for header {name!r}")


def _host_header(checked: CheckedUrl) -> str:
    host = f"[{checked.host}]" if ":" in checked.host else checked.host
    default = 443 if checked.scheme == "https" else 80
    return host if checked.port == default else f"{host}:{checked.port}"


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"redirect not followed (HTTP {status})"
    return f"HTTP {status}"


def _failure(
    started: float, error: str, address: str | None, *, refused: bool = False
) -> DeliveryResult:
    return DeliveryResult(
        status=None,
        latency_ms=_elapsed_ms(started),
        error=error,
        response_excerpt="",
        address=address,
        refused=refused,
    )


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
