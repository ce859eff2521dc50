"""The one SSE helper: `data: <json>` frames (or named events with ids, `event()`, for
job progress), keep-alive comments while waiting, a typed `error` event when something
fails after the first byte, `data: [DONE]` at the end (OpenAI's streams), and a cleanup
that runs however the stream ends (finished, failed, client gone).

sse-starlette supplies the framing, the pings and the disconnect handling; the
subclass adds the cleanup, because a generator that never started (the client left
before the first frame) would otherwise never run its `finally`, and the shutdown: when
the server stops, each stream ends at once with an `error` event (503, the server is
shutting down) and [DONE] instead of being cut mid-chunk (sse-starlette's default).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from .context import context
from .errors import InfergateError, UpstreamUnavailable, envelope

log = logging.getLogger("infergate.sse")
DONE = "[DONE]"


SEP = "\n"  # `data: …\n\n`, as OpenAI sends (sse-starlette's default is \r\n)
# After the server's stop signal, how long a stream has to send its error event before
# sse-starlette cancels it (it needs milliseconds; this bounds a stuck send).
SHUTDOWN_GRACE_S = 2.0


def data(payload: Any) -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps(payload).decode(), sep=SEP)


def event(name: str, payload: Mapping[str, Any], id: int | str | None) -> ServerSentEvent:
    """A named event (`event: <name>`, `id: <id>`, `data: <json>`): an EventSource sends
    the last id it saw back as Last-Event-ID when it reconnects."""
    return ServerSentEvent(
        data=orjson.dumps(payload).decode(),
        event=name,
        id=None if id is None else str(id),
        sep=SEP,
    )


def error_event(error: InfergateError, request_id: str | None) -> ServerSentEvent:
    """`event: error` with the usual error envelope as its data."""
    return ServerSentEvent(data=envelope(error, request_id).decode(), event="error", sep=SEP)


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep=SEP)


async def with_error_event(
    frames: AsyncIterator[ServerSentEvent], request_id: str | None
) -> AsyncIterator[ServerSentEvent]:
    """Frames, then [DONE]; an InfergateError mid-stream becomes an `error` event with
    the usual envelope (the OpenAI client raises it as an APIError), then [DONE]."""
    try:
        async for frame in frames:
            yield frame
    except InfergateError as exc:
        log.warning("stream ended by %s", exc.code)
        yield error_event(exc, request_id)
    except Exception:  # a bug must still end the stream cleanly, never hang it
        log.exception("stream failed")
        yield error_event(InfergateError(), request_id)
    yield ServerSentEvent(data=DONE, sep=SEP)


async def _until_stopped(
    frames: AsyncIterator[ServerSentEvent],
    stopping: anyio.Event,
    request_id: Callable[[], Any],
    done_marker: bool,
) -> AsyncIterator[ServerSentEvent]:
    """The frames, unless the server stops first: then an `error` event (and [DONE])."""
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(frames))
            await asyncio.wait((following, stopped), return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()  # ends the generation: its cleanup cancels the gRPC call
                error = UpstreamUnavailable("the server is shutting down; retry shortly")
                log.warning("stream ended by the server's shutdown")
                yield error_event(error, request_id())
                if done_marker:
                    yield ServerSentEvent(data=DONE, sep=SEP)
                return
            try:
                frame = following.result()
            except StopAsyncIteration:
                return
            yield frame
    finally:
        stopped.cancel()


class EventStream(EventSourceResponse):
    def __init__(
        self,
        frames: AsyncIterator[ServerSentEvent],
        on_close: Callable[[], Awaitable[None]],
        keepalive_s: float,
        headers: dict[str, str] | None = None,
        *,
        done_marker: bool = True,
    ) -> None:
        """`done_marker=False`: no [DONE] after the shutdown's error event (streams of
        named events, whose end is their own last event)."""
        stopping = anyio.Event()  # set by sse-starlette on the server's stop signal
        self._request_id: str | None = None
        super().__init__(
            _until_stopped(frames, stopping, lambda: self._request_id, done_marker),
            ping=keepalive_s,
            sep=SEP,
            ping_message_factory=_ping,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})},
            shutdown_event=stopping,
            shutdown_grace_period=SHUTDOWN_GRACE_S,
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._request_id = context(scope).request_id
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self._on_close())
