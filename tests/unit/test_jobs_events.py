"""Job progress events (frontend/jobs/events.py): `progress` only when `seq` grew, ids
strictly increasing, `done` last with the rendered job, Last-Event-ID resumes, a terminal
job sends `done` at once, keep-alive comments, a vanished job or a failed poll ends with
an `error` event. The load function is scripted: each poll takes the next snapshot."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, Request
from sse_starlette.sse import AppStatus
from starlette.responses import Response

from frontend import handlers
from frontend.db.jobs import JobRow
from frontend.errors import DatabaseUnavailable
from frontend.job_settings import JobSettings
from frontend.jobs import events
from frontend.sse import event

NOW = 1_800_000_000.0
BASE = JobRow(
    id="job_00000000000000000000000007",
    owner="alice",
    account="acct",
    subject="alice",
    tier="free",
    model="intent",
    version="1",
    task="classification",
    created_at=NOW,
    updated_at=NOW,
    state="running",
    planned=True,
    rows_total=100,
)


def snap(seq: int, state: str = "running", **changes: Any) -> JobRow:
    return replace(BASE, seq=seq, state=state, rows_done=seq * 10, **changes)


def render(job: JobRow) -> dict[str, Any]:
    return {"id": job.id, "object": "job", "state": job.state, "rows_done": job.rows_done}


class Script:
    """`load` hands out the snapshots in turn, then repeats the last one. With `gate`,
    the last one waits until `gate()` is true (the one before it repeats meanwhile)."""

    def __init__(self, *snapshots: JobRow | Exception | None, gate: Any = None) -> None:
        self.snapshots = snapshots
        self.gate = gate
        self.at = 0
        self.calls = 0

    async def load(self) -> JobRow | None:
        self.calls += 1
        last = len(self.snapshots) - 1
        if 0 < self.at == last and self.gate is not None and not self.gate():
            item = self.snapshots[self.at - 1]
        else:
            item = self.snapshots[self.at]
            self.at = min(self.at + 1, last)
        if isinstance(item, Exception):
            raise item
        return item


class Client:
    """One GET through the ASGI app, driven by hand (the test decides when it leaves)."""

    def __init__(self, app: Any, query: str = "", headers: dict[str, str] | None = None) -> None:
        self.app, self.query = app, query
        self.headers = headers or {}
        self.messages: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self._asked = False

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    async def __call__(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/events",
            "raw_path": b"/events",
            "query_string": self.query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in self.headers.items()],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
            "root_path": "",
        }
        async with asyncio.timeout(10):
            await self.app(scope, self._receive, self._send)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.messages if m["type"] == "http.response.start")

    @property
    def response_headers(self) -> dict[str, str]:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def text(self) -> str:
        body = b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )
        return body.decode()

    def frames(self) -> list[dict[str, str]]:
        """Each SSE block as its fields (`comment` for `: ...` lines)."""
        found = []
        for block in self.text.split("\n\n"):
            if not block.strip():
                continue
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(":")
                fields[name or "comment"] = value.removeprefix(" ")
            found.append(fields)
        return found

    def events(self) -> list[tuple[str, str | None, Any]]:
        """(event, id, data) of the events, comments left out."""
        return [
            (f.get("event", "message"), f.get("id"), orjson.loads(f["data"]))
            for f in self.frames()
            if "data" in f
        ]


def app_for(script: Script, **settings: Any) -> Any:
    app = FastAPI()
    handlers.install(app)
    config = JobSettings(**{"events_per_s": 50, "events_keepalive_s": 60, **settings})

    @app.get("/events")
    async def stream(request: Request) -> Response:
        return await events.job_events(request, load=script.load, render=render, settings=config)

    return app


def run(client: Client) -> Client:
    asyncio.run(client())
    return client


def test_progress_only_when_seq_grows_and_done_last():
    script = Script(snap(1), snap(1), snap(2), snap(5), snap(5), snap(6, "succeeded"))
    client = run(Client(app_for(script)))
    assert client.status == 200
    assert client.response_headers["content-type"].startswith("text/event-stream")
    assert client.response_headers["cache-control"] == "no-store"
    got = client.events()
    assert [(name, ident) for name, ident, _ in got] == [
        ("progress", "1"),
        ("progress", "2"),
        ("progress", "5"),
        ("done", "6"),
    ]
    ids = [int(ident) for _, ident, _ in got if ident is not None]
    assert ids == sorted(set(ids))  # strictly increasing
    assert got[-1][2] == render(snap(6, "succeeded"))
    assert "[DONE]" not in client.text  # the done event is the end
    assert script.calls == 6  # the stream ended after done: no further poll


def test_progress_data():
    job = snap(3, rows_failed=10, rate_rows_per_s=7.0)
    client = run(Client(app_for(Script(job, snap(4, "failed")))))
    name, ident, data = client.events()[0]
    assert (name, ident) == ("progress", "3")
    assert data == {
        "id": BASE.id,
        "state": "running",
        "rows_done": 30,
        "rows_failed": 10,
        "rows_total": 100,
        "rows_per_s": 7.0,
        "eta_s": 60 / 7.0,
    }


def test_eta_needs_a_rate_and_a_total():
    assert events.eta_s(snap(1)) is None
    assert events.eta_s(snap(1, rate_rows_per_s=0.0)) is None
    assert events.eta_s(snap(1, rate_rows_per_s=5.0, rows_total=None)) is None
    assert events.eta_s(snap(20, rate_rows_per_s=5.0, rows_total=100)) == 0.0  # never < 0


RESUMED = ["7", "9"]
EVERYTHING = ["3", "5", "7", "9"]


@pytest.mark.parametrize(
    ("query", "headers", "expected"),
    [
        ("", {"Last-Event-ID": "5"}, RESUMED),
        ("last_event_id=5", {}, RESUMED),  # EventSource polyfills that cannot set headers
        ("last_event_id=1", {"Last-Event-ID": "5"}, RESUMED),  # the header wins
        ("last_event_id=5", {"Last-Event-ID": "nope"}, RESUMED),  # a bad header: the query
        ("", {"Last-Event-ID": "nope"}, EVERYTHING),  # not an id: as if none was sent
        ("last_event_id=abc", {}, EVERYTHING),
        ("", {}, EVERYTHING),
    ],
)
def test_last_event_id_resumes_after_it(query: str, headers: dict[str, str], expected: list[str]):
    script = Script(snap(3), snap(5), snap(5), snap(7), snap(9, "cancelled"))
    client = run(Client(app_for(script), query, headers))
    got = client.events()
    assert [ident for _, ident, _ in got] == expected
    assert [name for name, _, _ in got] == ["progress"] * (len(expected) - 1) + ["done"]


def test_a_terminal_job_sends_done_at_once_whatever_the_id():
    for last in ("100", "3", "0"):
        script = Script(snap(9, "succeeded"))
        client = run(Client(app_for(script), headers={"Last-Event-ID": last}))
        assert client.events() == [("done", "9", render(snap(9, "succeeded")))]
        assert script.calls == 1


def test_keep_alive_comments_while_nothing_changes():
    """The job stays at one seq until a keep-alive comment went out, then finishes."""
    holder: list[Client] = []
    script = Script(snap(1), snap(2, "succeeded"), gate=lambda: ": ping" in holder[0].text)
    client = Client(app_for(script, events_keepalive_s=0.05))
    holder.append(client)
    run(client)
    frames = client.frames()
    assert {"comment": "ping"} in frames
    assert [(n, i) for n, i, _ in client.events()] == [("progress", "1"), ("done", "2")]
    assert script.calls > 2  # it kept polling while waiting


def test_a_vanished_job_ends_with_a_404_error_event():
    script = Script(snap(1), None)
    client = run(Client(app_for(script)))
    got = client.events()
    assert [(n, i) for n, i, _ in got] == [("progress", "1"), ("error", None)]
    error = got[-1][2]["error"]
    assert error["code"] == "not_found" and error["type"]
    assert script.calls == 2


def test_a_failed_poll_ends_with_its_error_event():
    script = Script(snap(1), DatabaseUnavailable("the database did not answer"))
    client = run(Client(app_for(script)))
    got = client.events()
    assert [(n, i) for n, i, _ in got] == [("progress", "1"), ("error", None)]
    assert got[-1][2]["error"]["code"] == "database_unavailable"


def test_done_id_stays_above_what_was_sent():
    """Whatever load returns (here a terminal snapshot whose seq did not move), the done
    event's id is above the last progress id."""
    client = run(Client(app_for(Script(snap(4), snap(4, "failed")))))
    assert [(n, i) for n, i, _ in client.events()] == [("progress", "4"), ("done", "5")]


def test_a_client_leaving_ends_the_stream():
    async def scenario() -> tuple[Client, int]:
        script = Script(snap(1))  # never finishes
        client = Client(app_for(script))
        task = asyncio.create_task(client())
        async with asyncio.timeout(10):
            while "progress" not in client.text:
                await asyncio.sleep(0.005)
        client.gone.set()
        await task  # returns: the stream stopped polling
        return client, script.calls

    client, calls = asyncio.run(scenario())
    assert [(n, i) for n, i, _ in client.events()] == [("progress", "1")]
    assert calls >= 1


def test_event_helper_frames():
    frame = event("progress", {"a": 1}, 7).encode().decode()
    assert frame == 'id: 7\nevent: progress\ndata: {"a":1}\n\n'
    assert "id:" not in event("error", {}, None).encode().decode()


def test_server_shutdown_ends_the_stream_with_an_error_and_no_done_marker(
    monkeypatch: pytest.MonkeyPatch,
):
    async def scenario() -> Client:
        client = Client(app_for(Script(snap(1))))  # never finishes by itself
        task = asyncio.create_task(client())
        async with asyncio.timeout(10):
            while "progress" not in client.text:
                await asyncio.sleep(0.005)
        monkeypatch.setattr(AppStatus, "should_exit", True)  # what uvicorn's signal sets
        await task
        return client

    client = asyncio.run(scenario())
    got = client.events()
    assert [(n, i) for n, i, _ in got] == [("progress", "1"), ("error", None)]
    assert got[-1][2]["error"]["code"] == "upstream_unavailable"
    assert "[DONE]" not in client.text  # a jobs stream ends with its own events
