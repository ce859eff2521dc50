"""The SSE helper: frames, then [DONE]; a failure after the first frame becomes an
`error` event with the envelope, then [DONE] (no server needed)."""

from __future__ import annotations

import asyncio
import json

from frontend.errors import UpstreamError
from frontend.sse import data, with_error_event


def _collect(frames) -> list[tuple[str | None, str]]:
    async def run():
        return [(f.event, f.data) async for f in with_error_event(frames, "rid-1")]

    return asyncio.run(run())


async def _frames(fail: Exception | None):
    yield data({"n": 1})
    if fail is not None:
        raise fail
    yield data({"n": 2})


def test_frames_then_done():
    events = _collect(_frames(None))
    assert events == [(None, '{"n":1}'), (None, '{"n":2}'), (None, "[DONE]")]


def test_domain_error_becomes_an_error_event_then_done():
    events = _collect(_frames(UpstreamError("generation failed in model 'chat'")))
    assert events[0] == (None, '{"n":1}')
    event, payload = events[1]
    body = json.loads(payload)["error"]
    assert event == "error" and body["code"] == "upstream_error"
    assert body["request_id"] == "rid-1"
    assert events[2] == (None, "[DONE]")


def test_unexpected_error_still_ends_the_stream_without_details():
    events = _collect(_frames(RuntimeError("secret internals")))
    event, payload = events[1]
    assert event == "error" and json.loads(payload)["error"]["code"] == "internal_error"
    assert "secret" not in payload and events[-1] == (None, "[DONE]")
