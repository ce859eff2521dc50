"""uvicorn's httptools protocol with the limits uvicorn lacks (issue 11 item 2).

uvicorn has no deadline for a request head, none for a body, no cap on a head's size or
field count (a 32 MB header and 10 000 fields were accepted), no cap on connections, and
does not check Host. Each is a few lines in the parser callbacks here:

- head deadline: from the connection's opening, or from the first byte of a kept-alive
  connection's next request, to the end of the head (slowloris); an idle new connection
  is closed at the same deadline, silently; a started head gets 408;
- body deadline: from the end of the head to the end of the body (stalled uploads), also
  while an early answer (413, 401) lets the rest of the body drain; 408 or a close;
- upload deadline, for `POST /v1/jobs` only (files of up to 500 MB, which no total of a
  few seconds allows): a progress deadline instead, at least `upload_min_bytes_per_window`
  in every `upload_window_s`, and the whole body within `upload_timeout_s`; an upload
  answered early (413, 401) drains until the next window's end at most;
- head size: bytes are fed to the parser only up to the cap, so a huge header is never
  buffered (431); field count (431); request target (414); credential values (431);
- Host: exactly one on HTTP/1.1, at most one on 1.0 (RFC 9112 §3.2): 400;
- connections: past the cap a new one gets 503 and is closed;
- the server's own 400s carry the envelope and the security headers; after one of its
  refusals the connection lingers (its write side shut, what still comes discarded) for
  up to LINGER_S, so that a client still sending reads the answer instead of a reset.

The keep-alive timeout is uvicorn's own (`timeout_keep_alive`).
"""

from __future__ import annotations

import asyncio
import select
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ..context import existing_context
from ..errors import (
    BadRequest,
    HeaderTooLarge,
    InfergateError,
    Overloaded,
    RequestTimeout,
    UriTooLong,
)
from ..middleware.security_headers import hsts_value
from ..settings import ServerSettings
from .raw import raw_error

_CREDENTIALS = frozenset({b"authorization", b"x-api-key"})
UPLOAD_PATH = "/v1/jobs"  # the one route whose bodies get the upload deadline
LINGER_S = 1.0
# A late event loop can run the head timer before the read of bytes that arrived in
# time (libuv runs due timers before it polls): a connection that looks idle but whose
# socket is readable gets one more look this long after, once the pending read has run.
RECHECK_S = 0.05


class _Refused(Exception):
    """Raised inside a parser callback: httptools turns it into HttpParserCallbackError,
    which uvicorn answers through `send_400_response`, where `self._refused` is sent."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ServerSettings,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        # Plain attributes: the callbacks below run for every header of every request.
        self._max_head = limits.max_header_bytes
        self._max_fields = limits.max_header_fields
        self._max_url = limits.max_url_bytes
        self._max_credential = limits.max_credential_bytes
        self._hsts = hsts_value(limits.hsts_max_age_s)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # between two requests or inside a head
        self._head_bytes = 0
        self._fields = 0
        self._hosts = 0
        self._refused: InfergateError | None = None
        self._lingering = False
        self._rechecked = False
        self._upload = False  # this request's body has the upload deadline
        self._body_bytes = 0  # body bytes since the upload's last window
        self._upload_ends = 0.0  # loop time by which the upload's whole body must be in
        self._window_min = 0  # bytes the upload's current window asks for

    # --- connection -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            transport.write(raw_error(Overloaded("too many connections, retry later")))
            transport.close()
            return
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if not self._in_head:
            super().data_received(data)
            return
        if self._head_timer is None:  # first byte of a kept-alive connection's request
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)
        room = self._max_head - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
        else:
            # Only what the cap allows reaches the parser: if the head ends inside it, the
            # rest is body (or the next request); otherwise the head is too large.
            self._head_bytes += room
            super().data_received(data[:room])
            if self._lingering or self.transport.is_closing():  # refused inside the parser
                return
            if self._in_head:
                self._refuse_now(HeaderTooLarge(f"request head exceeds {self._max_head} bytes"))
                return
            super().data_received(data[room:])
        if not self._in_head and not self._lingering and not self.transport.is_closing():
            # The head ended in this read, the body did not (a small body usually comes
            # with its head: no timer for those): the rest of the body has a deadline.
            self._start_body_deadline()

    # --- parser callbacks -------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self._max_url:
            self._refuse(UriTooLong(f"request target exceeds {self._max_url} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self._max_fields:
            self._refuse(HeaderTooLarge(f"more than {self._max_fields} header fields"))
        # uvicorn's on_header, inlined (it runs for every header), plus the checks.
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        elif len(value) > self._max_credential and name in _CREDENTIALS:
            self._refuse(HeaderTooLarge(f"{name.decode()} exceeds {self._max_credential} bytes"))
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        hosts, self._hosts, self._fields = self._hosts, 0, 0
        if hosts != 1 and (hosts > 1 or self.parser.get_http_version() == "1.1"):
            self._refuse(BadRequest("exactly one Host header is required"))
        super().on_headers_complete()
        self._upload = self.scope["method"] == "POST" and self.scope["path"] == UPLOAD_PATH

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # --- answers ----------------------------------------------------------------------
    def _refuse(self, error: InfergateError) -> None:
        self._refused = error
        raise _Refused

    def send_400_response(self, msg: str) -> None:
        error = self._refused or BadRequest("malformed HTTP request")
        self._refused = None
        self._refuse_now(error)

    def _refuse_now(self, error: InfergateError, request_id: str | None = None) -> None:
        hsts = self._hsts if self.scheme == "https" or self.limits.behind_tls_proxy else None
        response = raw_error(error, request_id, self.server_state.default_headers, hsts)
        self._cancel_timers()
        self.transport.write(response)
        if not self.transport.can_write_eof():  # TLS
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        if self.flow is not None:
            self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        started = self._head_bytes > 0
        if not started and not self._rechecked and self._readable():
            self._rechecked = True
            self._head_timer = self.loop.call_later(RECHECK_S, self._head_late)
            return
        if started and (self.cycle is None or self.cycle.response_complete):
            self._refuse_now(RequestTimeout("request head not received in time"))
        else:  # idle, or the next request's head behind one still being answered
            self.transport.close()

    def _readable(self) -> bool:
        """Whether bytes (or the peer's close) wait unread on the socket."""
        sock = self.transport.get_extra_info("socket")
        try:
            poller = select.poll()  # not select(): file descriptors past 1024
            poller.register(sock.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (AttributeError, OSError, ValueError):
            return False

    def _start_body_deadline(self) -> None:
        if not self._upload:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_late)
            return
        self._upload_ends = self.loop.time() + self.limits.upload_timeout_s
        self._body_bytes = 0
        self._next_window()

    def _next_window(self) -> None:
        # The last window may be shorter (the whole upload's deadline comes first): it asks
        # for its share of the bytes only.
        window = max(min(self.limits.upload_window_s, self._upload_ends - self.loop.time()), 0.0)
        share = window / self.limits.upload_window_s
        self._window_min = int(self.limits.upload_min_bytes_per_window * share)
        self._body_timer = self.loop.call_later(window, self._window_end)

    def _window_end(self) -> None:
        """An upload's progress check: too little in this window, past the whole upload's
        deadline, or already answered (the rest would only drain) ends it as the body
        deadline does."""
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        slow = self._body_bytes < self._window_min
        if slow or cycle.response_complete or self.loop.time() >= self._upload_ends:
            self._body_late()
            return
        self._body_bytes = 0
        self._next_window()

    def _body_late(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if not cycle.response_started:
            ctx = existing_context(cycle.scope)  # the app's, if it got that far
            request_id = ctx.request_id if ctx is not None else None
            self._refuse_now(RequestTimeout("request body not received in time"), request_id)
        else:
            self.transport.close()
        # The app sees the client gone: a read it is waiting on returns http.disconnect.
        cycle.disconnected = True
        cycle.message_event.set()
