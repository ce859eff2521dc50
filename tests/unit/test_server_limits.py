"""The server's slow-client and size limits (frontend/server/), the body guard's encoding
and duplicate-key checks, HSTS and CORS (issue 11 items 2, 10, 12, 13).

The protocol is driven directly, as uvicorn's own tests do: a fake transport records what
is written and when the connection is shut or closed; no socket, no server. Deadlines are
made small through the settings and each test waits on the transport's state."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import pickle
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pytest
import uvicorn
from uvicorn.server import ServerState

from frontend.middleware.body_guard import check_json
from frontend.server import uvicorn_options
from frontend.server.protocol import LINGER_S
from frontend.settings import CorsSettings, ServerSettings

from .test_frontend_errors import PREDICT, FakeTriton, _client, assert_envelope


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.eof = False
        self.closed = asyncio.Event()
        self.shut = asyncio.Event()  # write side shut (EOF sent) or closed
        self.sock: socket.socket | None = None  # what the protocol may poll for readiness

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        return self.sock if name == "socket" else extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.eof and not self.closed.is_set(), "write after EOF or close"
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True
        self.shut.set()

    def close(self) -> None:
        self.closed.set()
        self.shut.set()

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...

    def response(self) -> tuple[int, dict[str, str], bytes]:
        head, _, body = bytes(self.written).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


class Seen:
    """The fake app: answers 200 after reading the body, records what it received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.messages: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.requests.append(scope)
        while True:
            message = await receive()
            self.messages.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if message["type"] == "http.disconnect":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test in a fresh event loop (no asyncio plugin here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


FAST = {"header_timeout_s": 0.2, "body_timeout_s": 0.2, "keep_alive_s": 0.2}


class Conn:
    def __init__(self, app: Seen, state: ServerState, limits: ServerSettings) -> None:
        config = uvicorn.Config(app, log_config=None, lifespan="off", **uvicorn_options(limits))
        config.load()
        self.protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=state, app_state={}
        )
        self.transport = FakeTransport()
        self.protocol.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def wait(self, event: asyncio.Event, timeout: float = 5.0) -> float:
        started = time.monotonic()
        await asyncio.wait_for(event.wait(), timeout)
        return time.monotonic() - started


@pytest.fixture
def app() -> Seen:
    return Seen()


@pytest.fixture
def connect(app: Seen):
    state = ServerState()

    def make(**limits: Any) -> Conn:
        return Conn(app, state, ServerSettings(**limits))

    return make


def envelope_of(transport: FakeTransport, status: int, code: str) -> dict[str, str]:
    got, headers, body = transport.response()
    assert got == status, bytes(transport.written)
    error = orjson.loads(body)["error"]
    assert error["code"] == code
    assert error["request_id"] == headers["x-request-id"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["connection"] == "close"
    assert "server" not in headers
    return headers


GET = b"GET /health/live HTTP/1.1\r\nHost: api\r\n\r\n"


# --- item 2: deadlines -------------------------------------------------------------------
@in_loop
async def test_slowloris_head_gets_408_at_the_head_deadline(connect):
    conn = connect(**FAST)
    conn.send(b"GET /health/live HTTP/1.1\r\nHost: api\r\nX-a: ")
    for _ in range(3):  # dribbling bytes does not extend the deadline
        conn.send(b"a")
    elapsed = await conn.wait(conn.transport.shut)
    envelope_of(conn.transport, 408, "request_timeout")
    print(f"slowloris closed after {elapsed:.3f}s (deadline 0.2s)")
    assert elapsed >= 0.15


@in_loop
async def test_a_head_that_arrived_in_time_is_not_taken_for_idle_when_the_loop_is_late(connect):
    # The loop stalls past the head deadline while the head's first bytes wait on the
    # socket: the deadline's timer runs before the read (as libuv orders them). The
    # protocol sees the socket readable, looks again once the read has run, and answers
    # the started head 408 instead of closing it as an idle connection.
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        head = b"GET /health/live HTTP/1.1\r\nHost: api\r\nX-a: "
        theirs.sendall(head)
        conn = connect(**FAST)
        conn.transport.sock = ours
        loop.call_later(0.21, conn.send, head)  # the read, due just after the deadline
        time.sleep(0.3)  # the stall: both are due when the loop runs again
        await conn.wait(conn.transport.shut)
        envelope_of(conn.transport, 408, "request_timeout")

        # Readable but never read (nothing reached the parser): one more look, then the
        # silent close of an idle connection, not a loop of looks.
        idle = connect(**FAST)
        idle.transport.sock = ours
        elapsed = await idle.wait(idle.transport.closed)
        assert idle.transport.written == b""
        assert elapsed < 2


@in_loop
async def test_idle_new_connection_is_closed_silently(connect):
    conn = connect(**FAST)
    await conn.wait(conn.transport.closed)
    assert conn.transport.written == b""  # nothing was asked: no stray 408 for a preconnect


@in_loop
async def test_kept_alive_connection_closes_after_keep_alive_and_next_head_has_a_deadline(
    connect, app
):
    conn = connect(**{**FAST, "keep_alive_s": 5.0})
    conn.send(GET)
    await asyncio.wait_for(_until(lambda: b"ok" in conn.transport.written), 5)
    conn.transport.written.clear()
    conn.send(b"GET /health/live HTTP/1.1\r\nHost: a")  # the next head, never finished
    await conn.wait(conn.transport.shut)
    envelope_of(conn.transport, 408, "request_timeout")

    idle = connect(**{**FAST, "keep_alive_s": 0.2, "header_timeout_s": 5.0})
    idle.send(GET)
    await idle.wait(idle.transport.closed)  # keep-alive timeout, well before 5 s
    assert b"ok" in idle.transport.written


@in_loop
async def test_stalled_body_gets_408_and_the_app_sees_a_disconnect(connect, app):
    conn = connect(**FAST)
    conn.send(b"POST /v1/x HTTP/1.1\r\nHost: api\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 10)
    await conn.wait(conn.transport.shut)
    envelope_of(conn.transport, 408, "request_timeout")
    await asyncio.wait_for(_until(lambda: "http.disconnect" in app.messages), 5)


@in_loop
async def test_a_trickled_body_gets_408_at_the_body_deadline(connect):
    conn = connect(**FAST)
    conn.send(b"POST /v1/x HTTP/1.1\r\nHost: api\r\nContent-Length: 1000\r\n\r\n")
    started = time.monotonic()
    while not conn.transport.shut.is_set():  # a byte every 20 ms: progress, never done
        conn.send(b"x")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.transport.shut.wait(), 0.02)
        assert time.monotonic() - started < 5
    envelope_of(conn.transport, 408, "request_timeout")


# --- the upload deadline (POST /v1/jobs) --------------------------------------------------
UPLOAD = {**FAST, "upload_window_s": 0.2, "upload_min_bytes_per_window": 100}


def upload_head(length: int, path: str = "/v1/jobs") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: api\r\nContent-Length: {length}\r\n\r\n".encode()


async def trickle(conn: Conn, piece: bytes, seconds: float) -> int:
    """Sends `piece` every 20 ms for `seconds` or until the connection is shut; the bytes
    sent."""
    until = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < until and not conn.transport.shut.is_set():
        conn.send(piece)
        sent += len(piece)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.transport.shut.wait(), 0.02)
    return sent


@in_loop
async def test_an_upload_that_keeps_its_pace_outlives_the_body_deadline(connect, app):
    conn = connect(**UPLOAD, upload_timeout_s=30)
    length = 100_000
    conn.send(upload_head(length))
    # Four body deadlines long, 200 bytes per 20 ms: every window gets its 100 bytes.
    sent = await trickle(conn, b"x" * 200, 0.8)
    assert not conn.transport.shut.is_set()
    conn.send(b"x" * (length - sent))
    await asyncio.wait_for(_until(lambda: b"ok" in conn.transport.written), 5)
    assert conn.transport.response()[0] == 200
    assert "http.disconnect" not in app.messages


@in_loop
async def test_an_upload_below_its_pace_gets_408_after_a_window(connect, app):
    conn = connect(**{**UPLOAD, "upload_min_bytes_per_window": 10_000}, upload_timeout_s=30)
    conn.send(upload_head(1_000_000))
    started = time.monotonic()
    await trickle(conn, b"x" * 10, 5)  # 100 bytes a window: too slow
    elapsed = time.monotonic() - started
    envelope_of(conn.transport, 408, "request_timeout")
    assert 0.15 <= elapsed < 5, elapsed
    await asyncio.wait_for(_until(lambda: "http.disconnect" in app.messages), 5)


@in_loop
async def test_an_upload_past_its_whole_deadline_gets_408_despite_its_pace(connect):
    conn = connect(**UPLOAD, upload_timeout_s=0.5)
    conn.send(upload_head(1_000_000))
    started = time.monotonic()
    await trickle(conn, b"x" * 200, 5)
    elapsed = time.monotonic() - started
    envelope_of(conn.transport, 408, "request_timeout")
    assert 0.45 <= elapsed < 5, elapsed


@in_loop
async def test_only_the_upload_route_gets_the_upload_deadline(connect):
    # Generous upload windows: another path (a job's own routes included) keeps the
    # body deadline's 0.2 s total however steadily it sends.
    for path in ("/v1/jobs/abc", "/v1/jobsx", "/v1/x"):
        conn = connect(**{**UPLOAD, "upload_window_s": 5.0}, upload_timeout_s=30)
        conn.send(upload_head(1_000_000, path))
        started = time.monotonic()
        await trickle(conn, b"x" * 200, 5)
        envelope_of(conn.transport, 408, "request_timeout")
        assert time.monotonic() - started < 2, path
    # The upload route with a query string is still the upload route.
    conn = connect(**{**UPLOAD, "upload_window_s": 5.0}, upload_timeout_s=30)
    conn.send(upload_head(1_000_000, "/v1/jobs?x=1"))
    await trickle(conn, b"x" * 200, 0.6)
    assert not conn.transport.shut.is_set()


@in_loop
async def test_an_upload_answered_early_drains_a_window_at_most(connect):
    class EarlyAnswer(Seen):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 413, "headers": []})
            await send({"type": "http.response.body", "body": b"no"})

    conn = Conn(EarlyAnswer(), ServerState(), ServerSettings(**UPLOAD, upload_timeout_s=30))
    conn.send(upload_head(100_000_000))
    await asyncio.wait_for(_until(lambda: b"no" in conn.transport.written), 5)
    started = time.monotonic()
    await trickle(conn, b"x" * 4096, 5)  # fast, but nobody reads it any more
    assert conn.transport.closed.is_set()
    assert time.monotonic() - started < 2


def test_upload_deadline_defaults_close_a_crawl_below_4_kib_per_second():
    s = ServerSettings()
    assert (s.upload_window_s, s.upload_min_bytes_per_window, s.upload_timeout_s) == (
        15.0,
        65_536,
        3600.0,
    )
    assert s.upload_min_bytes_per_window / s.upload_window_s >= 4096
    assert s.header_timeout_s + s.upload_window_s < 30  # a stalled upload: closed < 30 s


@in_loop
async def test_expect_100_continue_still_works(connect, app):
    conn = connect()
    conn.send(b"POST /v1/x HTTP/1.1\r\nHost: api\r\nExpect: 100-continue\r\n")
    conn.send(b"Content-Length: 2\r\n\r\n")
    await asyncio.wait_for(_until(lambda: b"100 Continue" in conn.transport.written), 5)
    conn.send(b"{}")
    await asyncio.wait_for(_until(lambda: b"ok" in conn.transport.written), 5)


@in_loop
async def test_a_body_left_unread_after_an_early_answer_cannot_hold_the_connection(connect):
    class EarlyAnswer(Seen):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 413, "headers": []})
            await send({"type": "http.response.body", "body": b"no"})

    state = ServerState()
    conn = Conn(EarlyAnswer(), state, ServerSettings(**FAST))
    conn.send(b"POST /v1/x HTTP/1.1\r\nHost: api\r\nContent-Length: 1000\r\n\r\n")
    await asyncio.wait_for(_until(lambda: b"no" in conn.transport.written), 5)
    for _ in range(3):
        conn.send(b"x")  # a trickle would otherwise keep it open for ever
    await conn.wait(conn.transport.closed)


# --- item 2: sizes -----------------------------------------------------------------------
@in_loop
async def test_a_32_mb_header_is_431_after_reading_only_the_cap(connect, app):
    conn = connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: api\r\nX-Big: ")
    fed = 0
    chunk = b"a" * 65_536
    while not conn.transport.shut.is_set() and fed < 32 << 20:
        conn.send(chunk)
        fed += len(chunk)
    envelope_of(conn.transport, 431, "header_too_large")
    assert fed <= 2 * 65_536, f"refused only after {fed} bytes"
    assert app.requests == []


@in_loop
async def test_ten_thousand_header_fields_are_431(connect, app):
    conn = connect()
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(10_000))
    conn.send(b"GET / HTTP/1.1\r\nHost: api\r\n" + fields + b"\r\n")
    envelope_of(conn.transport, 431, "header_too_large")
    assert app.requests == []
    ok = connect()
    ok.send(b"GET / HTTP/1.1\r\nHost: api\r\n" + b"".join(fields.splitlines(True)[:98]) + b"\r\n")
    await asyncio.wait_for(_until(lambda: b"ok" in ok.transport.written), 5)


@in_loop
async def test_a_one_megabyte_url_is_414(connect, app):
    conn = connect()
    conn.send(b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: api\r\n\r\n")
    envelope_of(conn.transport, 414, "uri_too_long")
    assert app.requests == []


@pytest.mark.parametrize("header", [b"Authorization: Bearer ", b"X-API-Key: ig_live_"])
@in_loop
async def test_an_oversized_credential_is_431_before_the_app(connect, app, header):
    conn = connect()
    conn.send(b"GET /v1/models HTTP/1.1\r\nHost: api\r\n" + header + b"a" * 5000 + b"\r\n\r\n")
    headers = envelope_of(conn.transport, 431, "header_too_large")
    assert app.requests == []
    assert "strict-transport-security" not in headers  # plain HTTP, no proxy setting
    fine = connect()
    fine.send(b"GET /v1/models HTTP/1.1\r\nHost: api\r\n" + header + b"a" * 3000 + b"\r\n\r\n")
    await asyncio.wait_for(_until(lambda: b"ok" in fine.transport.written), 5)


@in_loop
async def test_a_head_and_body_in_one_read_past_the_head_cap_is_served(connect, app):
    conn = connect(max_header_bytes=4096)
    body = b"x" * 100_000
    conn.send(b"POST / HTTP/1.1\r\nHost: api\r\nContent-Length: 100000\r\n\r\n" + body)
    await asyncio.wait_for(_until(lambda: b"ok" in conn.transport.written), 5)


@in_loop
async def test_connections_over_the_cap_get_503(connect):
    kept = [connect(max_connections=3) for _ in range(3)]
    over = connect(max_connections=3)
    envelope_of(over.transport, 503, "overloaded")
    assert over.transport.closed.is_set()
    assert all(not c.transport.shut.is_set() for c in kept)


# --- item 10: Host, malformed requests, Server header ------------------------------------
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\n\r\n", 200),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ],
)
@in_loop
async def test_host_header_rules(connect, request_bytes, status):
    conn = connect()
    conn.send(request_bytes)
    if status == 400:
        envelope_of(conn.transport, 400, "bad_request")
    else:
        await asyncio.wait_for(_until(lambda: b"ok" in conn.transport.written), 5)
        assert conn.transport.response()[0] == 200


@in_loop
async def test_malformed_request_gets_the_envelope_and_a_lingering_close(connect):
    conn = connect()
    conn.send(b"NOT HTTP AT ALL\r\n\r\n")
    envelope_of(conn.transport, 400, "bad_request")
    assert conn.transport.eof and not conn.transport.closed.is_set()
    conn.send(b"more bytes are discarded")  # the client may still be sending
    elapsed = await conn.wait(conn.transport.closed)
    assert elapsed <= LINGER_S + 1.0


def test_no_server_header_and_the_protocol_pickles_for_workers():
    config = uvicorn.Config("x:y", **uvicorn_options(ServerSettings()))
    assert b"server" not in dict(config.encoded_headers)
    assert pickle.loads(pickle.dumps(uvicorn_options(ServerSettings())["http"])).keywords
    tls = uvicorn_options(ServerSettings(tls_certfile="c.pem", tls_keyfile="k.pem"))
    assert (tls["ssl_certfile"], tls["ssl_keyfile"]) == ("c.pem", "k.pem")


def test_defaults_are_the_documented_ones():
    s = ServerSettings()
    assert (s.header_timeout_s, s.body_timeout_s, s.keep_alive_s) == (10.0, 15.0, 5.0)
    assert (s.max_header_bytes, s.max_header_fields, s.max_url_bytes) == (65_536, 100, 8192)
    assert (s.max_credential_bytes, s.max_connections) == (4096, 1000)
    assert s.header_timeout_s + s.body_timeout_s < 30  # the bound for slow clients
    with pytest.raises(ValueError):
        ServerSettings(header_timeout_s=0)
    with pytest.raises(ValueError):
        ServerSettings(tls_certfile="cert.pem")
    with pytest.raises(ValueError):
        ServerSettings(trusted_proxies=["*"])  # every client could pick its own address
    assert ServerSettings(trusted_proxies=["10.0.0.0/8"]).trusted_proxies == ["10.0.0.0/8"]


# --- item 10: HSTS -----------------------------------------------------------------------
def test_hsts_over_tls_or_behind_a_tls_proxy_only(tmp_path):
    from fastapi.testclient import TestClient

    from frontend.settings import ServerSettings as S

    plain = _client(tmp_path / "a", FakeTriton())
    tls = TestClient(plain.app, base_url="https://testserver")
    proxied = _client(tmp_path / "b", FakeTriton(), server=S(behind_tls_proxy=True))
    try:
        assert "strict-transport-security" not in plain.get("/health/live").headers
        hsts = tls.get("/health/live").headers["strict-transport-security"]
        assert hsts == "max-age=31536000; includeSubDomains"
        assert "strict-transport-security" in proxied.get("/health/live").headers
    finally:
        plain.__exit__(None, None, None)
        proxied.__exit__(None, None, None)


# --- item 12: UTF-8 only, no duplicate keys ----------------------------------------------
@pytest.fixture
def api(tmp_path):
    client = _client(tmp_path, FakeTriton())
    yield client
    client.__exit__(None, None, None)


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "raw",
    [
        '{"inputs": "hello"}'.encode("utf-16"),  # with a BOM
        '{"inputs": "hello"}'.encode("utf-16-le"),
        '{"inputs": "hello"}'.encode("utf-32"),
        '{"inputs": "hello"}'.encode("utf-8-sig"),
        b'{"inputs": "caf\xe9"}',  # Latin-1
    ],
)
def test_a_body_not_in_utf8_is_415(api, raw):
    assert_envelope(api.post(PREDICT, content=raw, headers=JSON), 415, "unsupported_encoding")


def test_a_declared_charset_other_than_utf8_is_415(api):
    body = b'{"inputs": "hello"}'
    ct = {"Content-Type": "application/json; charset=utf-16"}
    assert_envelope(api.post(PREDICT, content=body, headers=ct), 415, "unsupported_encoding")
    utf8 = {"Content-Type": "application/json; charset=UTF-8"}
    ok = api.post(PREDICT, content=body, headers=utf8)
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        b'{"inputs": "a", "inputs": "b"}',
        b'{"inputs": "a", "\\u0069nputs": "b"}',  # the same key, escaped
        b'{"inputs": "a", "top_k": 1, "top_k": 2}',
        b'{"inputs": "a\\ud800", "inputs": "b"}',  # through the lone-surrogate path
    ],
)
def test_duplicate_keys_are_400(api, raw):
    assert_envelope(api.post(PREDICT, content=raw, headers=JSON), 400, "duplicate_json_key")


def test_nested_duplicate_keys_and_colons_in_strings():
    with pytest.raises(Exception, match="same key twice"):
        check_json(b'{"a": [{"b": 1, "b": 2}]}', 64)
    body = {"inputs": ["time: 5pm", "https://x.example/a:b", 'a\\": ":'], "top_k": 2}
    assert check_json(json.dumps(body).encode(), 64) == body
    assert check_json(b'{"a":1}', 64) == {"a": 1}


def test_body_guard_cost_stays_small():
    """Not asserted against a number (machines differ): printed for the report, and the
    exact duplicate check only runs when colons outnumber keys."""
    plain = json.dumps({"inputs": ["what is my balance"] * 32, "top_k": 3}).encode()
    colons = json.dumps({"inputs": ["time: 5pm, my balance"] * 32, "top_k": 3}).encode()
    for name, body in (("plain", plain), ("colons", colons)):
        n = 2000
        started = time.perf_counter()
        for _ in range(n):
            check_json(body, 64)
        per_call_us = (time.perf_counter() - started) / n * 1e6
        print(f"check_json {name} ({len(body)} B): {per_call_us:.1f} us")


# --- item 13: CORS -----------------------------------------------------------------------
def test_cors_allows_the_routes_methods_and_a_configured_max_age(tmp_path):
    origin = "https://admin.example.com"
    client = _client(
        tmp_path, FakeTriton(), cors=CorsSettings(allow_origins=[origin], max_age_s=1234)
    )
    try:
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            preflight = client.options(
                "/v1/admin/routing/intent",
                headers={"Origin": origin, "Access-Control-Request-Method": method},
            )
            assert preflight.status_code == 200, (method, preflight.text)
            assert method in preflight.headers["access-control-allow-methods"]
            assert preflight.headers["access-control-max-age"] == "1234"
        refused = client.options(
            "/v1/models",
            headers={"Origin": origin, "Access-Control-Request-Method": "TRACE"},
        )
        assert refused.status_code == 400
    finally:
        client.__exit__(None, None, None)
    with pytest.raises(ValueError):
        CorsSettings(max_age_s=-1)


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.005)
