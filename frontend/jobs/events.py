"""A job's progress as Server-Sent Events (design §6 "SSE").

The stream polls the job (`load`, `jobs.events_per_s` times a second) and sends an
`event: progress` whenever its `seq` grew, with `id: <seq>`; once the job is terminal,
one `event: done` with the whole JobResponse (`render`), then the stream ends. Events
are snapshots: changes between two polls are coalesced, the ids are strictly
increasing, and the final one is always sent.

Resuming: a client that reconnects with `Last-Event-ID` (or `?last_event_id=`, for
EventSource polyfills that cannot set headers; a non-integer is ignored) gets nothing
until `seq` passes that id; a job that is already terminal sends `done` at once whatever
the id, so a client that reconnects after the end is not left waiting. The job gone
meanwhile (deleted, or retention) → `event: error` with the 404 envelope; a failure while
polling (the database away) → `event: error` with its envelope. Either way the stream
ends, and an EventSource reconnects with the last id it saw.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from ..context import context
from ..db.jobs import JobRow
from ..errors import InfergateError, NotFound
from ..job_settings import JobSettings
from ..sse import EventStream, error_event, event

log = logging.getLogger("infergate.jobs.events")


def last_event_id(request: Request) -> int | None:
    """The id the client saw last: the Last-Event-ID header, else ?last_event_id=."""
    for given in (request.headers.get("last-event-id"), request.query_params.get("last_event_id")):
        if given is not None:
            try:
                return int(given.strip())
            except ValueError:
                continue  # not one of our ids: as if none was sent
    return None


def eta_s(job: JobRow) -> float | None:
    """Seconds left at the job's recent rate; None before the first commit (no rate)."""
    rate = job.rate_rows_per_s
    if job.rows_total is None or rate is None or rate <= 0:
        return None
    return max(job.rows_total - job.rows_done - job.rows_failed, 0) / rate


def progress(job: JobRow) -> dict[str, Any]:
    """The data of a progress event: the counters a progress bar needs, nothing more."""
    return {
        "id": job.id,
        "state": job.state,
        "rows_done": job.rows_done,
        "rows_failed": job.rows_failed,
        "rows_total": job.rows_total,
        "rows_per_s": job.rate_rows_per_s,
        "eta_s": eta_s(job),
    }


async def _frames(
    load: Callable[[], Awaitable[JobRow | None]],
    render: Callable[[JobRow], dict[str, Any]],
    last: int | None,
    interval_s: float,
    request_id: str | None,
) -> AsyncIterator[ServerSentEvent]:
    sent: int | None = None  # the last id this stream sent
    try:
        while True:
            job = await load()
            if job is None:
                yield error_event(NotFound("no job with this id"), request_id)
                return
            if job.terminal:
                # Terminal transitions move seq, so seq is already above what was sent;
                # the max keeps the ids increasing whatever a caller's load returns.
                final = job.seq if sent is None else max(job.seq, sent + 1)
                yield event("done", render(job), final)
                return
            if last is None or job.seq > last:
                last = sent = job.seq
                yield event("progress", progress(job), job.seq)
            await anyio.sleep(interval_s)
    except InfergateError as exc:
        log.warning("job events ended by %s", exc.code)
        yield error_event(exc, request_id)
    except Exception:  # a bug still ends the stream with an event, never hangs it
        log.exception("job events failed")
        yield error_event(InfergateError(), request_id)


async def _nothing() -> None:
    return None


async def job_events(
    request: Request,
    *,
    load: Callable[[], Awaitable[JobRow | None]],
    render: Callable[[JobRow], dict[str, Any]],
    settings: JobSettings,
) -> Response:
    """The job's event stream (text/event-stream): progress events while it runs, `done`
    with `render(job)` at the end; keep-alive comments every `events_keepalive_s`."""
    frames = _frames(
        load,
        render,
        last_event_id(request),
        1.0 / settings.events_per_s,
        context(request).request_id,
    )
    return EventStream(frames, _nothing, settings.events_keepalive_s, done_marker=False)
