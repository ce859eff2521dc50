"""The chat model's watch on Triton's readiness (the second of its two stop triggers, for
a Triton stopped by someone other than the embedded launcher): it stops the engine only
on Triton's own word, twice, after Triton had said it was ready; it asks nothing while
the engine is idle. A fake engine and a scripted readiness (no Triton)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import ClassVar

from export.runtime.chat_model import ServerWatch
from export.runtime.server_watch import HTTP_URL_ENV, http_ready, model_ready_url
from procs.triton_metrics import wait_for


class FakeEngine:
    def __init__(self, busy: bool = True) -> None:
        self.busy = busy
        self.stopped = threading.Event()

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    def request_stop(self) -> None:
        self.stopped.set()


def scripted(answers: list[object]) -> tuple[Callable[[], bool | None], list[int]]:
    """Readiness answers in order (an Exception is raised), then the last one forever;
    also returns how many times it was asked."""
    asked = [0]
    script: Iterator[object] = iter(answers)
    last: list[object] = [answers[-1]]

    def ready() -> bool | None:
        asked[0] += 1
        answer = next(script, last[0])
        if isinstance(answer, Exception):
            raise answer
        return None if answer is None else bool(answer)  # None: no answer in time

    return ready, asked


def watch(engine: FakeEngine, answers: list[object]) -> tuple[ServerWatch, list[int]]:
    ready, asked = scripted(answers)
    return ServerWatch(ready, engine, interval_s=0.005).start(), asked


def test_stops_the_engine_when_triton_stops_being_ready():
    engine = FakeEngine()
    w, asked = watch(engine, [True, True, False, RuntimeError("Server not ready")])
    try:
        assert engine.stopped.wait(5)
        assert asked[0] == 4  # two ready, then two misses in a row
    finally:
        w.close()


def test_not_ready_while_triton_starts_is_not_a_stop():
    # Triton is not ready until every model has loaded: misses before the first "ready"
    # are the start, not a stop.
    engine = FakeEngine()
    w, asked = watch(engine, [RuntimeError("Server not ready")] * 5 + [True])
    try:
        wait_for(lambda: asked[0] >= 20, "20 answers")
        assert not engine.stopped.is_set()
    finally:
        w.close()


def test_one_miss_alone_does_not_stop():
    engine = FakeEngine()
    w, asked = watch(engine, [True, False, True])
    try:
        wait_for(lambda: asked[0] >= 20, "20 answers")
        assert not engine.stopped.is_set()
    finally:
        w.close()


def test_asks_nothing_while_idle_once_ready():
    engine = FakeEngine(busy=False)
    w, asked = watch(engine, [True, False])
    try:
        wait_for(lambda: asked[0] >= 1, "the first answer")
        # Idle: a stop can finalize at once, nothing to end; no call into Triton. (An
        # absence is only seen over time: 40 intervals.)
        time.sleep(0.2)
        assert asked[0] == 1 and not engine.stopped.is_set()
        engine.busy = True
        assert engine.stopped.wait(5)  # busy again: it asks, and hears "not ready"
    finally:
        w.close()


def test_asks_nothing_once_the_engine_is_stopped_another_way():
    # The launcher's announcement (or finalize) stopped it: from then on a call into a
    # stopping Triton could only block the stub.
    engine = FakeEngine()
    w, asked = watch(engine, [True])
    try:
        wait_for(lambda: asked[0] >= 3, "3 answers")
        engine.request_stop()
        # It ends on its own (it would otherwise go on asking every interval).
        wait_for(lambda: not w._thread.is_alive(), "the watch to end", 5)
    finally:
        w.close()


def test_no_answer_in_time_is_neither_a_yes_nor_a_no():
    # ready, then a miss, then None (a timeout) between misses: the misses still count as
    # two in a row; a None alone never stops the engine.
    engine = FakeEngine()
    w, asked = watch(engine, [True, None, None, None, None])
    try:
        wait_for(lambda: asked[0] >= 20, "20 answers")
        assert not engine.stopped.is_set()
    finally:
        w.close()
    engine = FakeEngine()
    w, asked = watch(engine, [True, False, None, False])
    try:
        assert engine.stopped.wait(5)
        assert asked[0] == 4
    finally:
        w.close()


class _Readiness(http.server.BaseHTTPRequestHandler):
    status = 200
    delay_s = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay_s)  # a busy server: answers later than the probe waits
        type(self).paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass

    paths: ClassVar[list[str]] = []


def test_the_http_probe_reads_triton_s_answers():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Readiness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    url = model_ready_url({HTTP_URL_ENV: base}, {}, "chat", "1")
    try:
        assert url == f"{base}/v2/models/chat/versions/1/ready"
        _Readiness.status = 200
        assert http_ready(url)() is True
        assert _Readiness.paths[-1] == "/v2/models/chat/versions/1/ready"
        _Readiness.status = 400  # Triton's "Server not ready" / model not ready
        assert http_ready(url)() is False
        _Readiness.status, _Readiness.delay_s = 200, 0.5
        assert http_ready(url, timeout_s=0.1)() is None
    finally:
        _Readiness.delay_s = 0.0
        server.shutdown()
        server.server_close()
    # Nobody listening any more (Triton stopped its endpoint): a no.
    assert http_ready(url)() is False


def test_the_probe_asks_triton_directly_whatever_proxy_the_environment_names(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Readiness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/chat/versions/1/ready"
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nobody there: a proxied ask fails
    try:
        _Readiness.status = 200
        assert http_ready(url)() is True
    finally:
        server.shutdown()
        server.server_close()


def test_where_the_probe_asks():
    assert model_ready_url({}, {}, "chat", "2") == (
        "http://127.0.0.1:8000/v2/models/chat/versions/2/ready"
    )
    params = {"triton_http_url": "http://triton:8000/"}
    assert model_ready_url({}, params, "chat", "1").startswith("http://triton:8000/v2/")
    env = {HTTP_URL_ENV: "http://10.0.0.1:9000"}
    assert model_ready_url(env, params, "a b", "1") == (
        "http://10.0.0.1:9000/v2/models/a%20b/versions/1/ready"
    )
