"""Shutdown with the chat model loaded (issue 11, item 9).

Triton finalizes a model only once each of its requests has had its final response: a
generation nobody cancelled held Triton's stop for its whole 30 s timeout, the chat stub
at 100 % CPU, until the launcher SIGKILLed it. Now the chat model sees Triton stop and
ends every generation at once, with a final error.

Here: the engine in process; Triton alone with uncancelled gRPC generations; and the
whole stack (`python -m frontend serve`, the real repository) stopped idle and with chat
generations in flight, by SIGINT or SIGTERM to its process group (a terminal's Ctrl-C,
systemd) or SIGTERM to `serve` alone (a container's PID 1). Each must exit 0 in < 10 s,
every stream end with an error event or complete, and no Triton process be left.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export.runtime.generation import (
    ChatEngine,
    Collector,
    GenerationError,
    Limits,
    Metrics,
    Sampling,
)
from export.triton_launcher import EmbeddedTriton
from procs.ports import free_port
from procs.triton_metrics import model_gauge
from procs.wait import wait_for

from .conftest import ADMIN, ADMIN_KEY, ROOT, TEST_SECRET, free_ports

pytestmark = pytest.mark.integration

STOP_WITHIN_S = 10.0
STORY = "Tell me a very long story about a lighthouse keeper, chapter {}."


# --- the engine ------------------------------------------------------------------------


class StepCount(Metrics):
    def __init__(self) -> None:
        self.steps = 0

    def step(self, rows: int) -> None:
        self.steps += 1


def test_engine_stops_within_one_step_once_the_stop_is_announced(repository, tmp_path):
    announced = tmp_path / "stopping"  # what the launcher creates before it stops Triton
    metrics = StepCount()
    engine = ChatEngine(
        repository / "chat" / "1",
        Limits(slots=2, queue=4),
        metrics=metrics,
        stop_signal=announced.exists,
    ).start()
    sinks = [Collector() for _ in range(5)]  # two generating, three queued
    for i, sink in enumerate(sinks):
        ids = engine.encode_prompt(None, [{"role": "user", "content": STORY.format(i)}])
        engine.submit(ids, Sampling(max_tokens=500), sink)
    wait_for(lambda: all(len(s.generated_ids) >= 3 for s in sinks[:2]), "2 generating", 120)
    steps_at_stop = metrics.steps
    announced.touch()
    wait_for(lambda: all(s.done.is_set() for s in sinks), "every sequence ended", 10)
    assert metrics.steps <= steps_at_stop + 1  # at most the step already running
    assert [s.error and s.error.code for s in sinks] == ["overloaded"] * 5  # final errors
    assert all("shutting down" in str(s.error) for s in sinks)
    with pytest.raises(GenerationError, match="shutting down"):  # and no new sequence
        engine.submit([1, 2, 3], Sampling(max_tokens=5), Collector())
    engine.stop()  # what finalize does
    assert not any(t.name == "chat-decode" and t.is_alive() for t in threading.enumerate())
    assert engine.session is None  # the ONNX session is let go


# --- Triton alone ----------------------------------------------------------------------


def _chat_only(repository: Path, into: Path) -> Path:
    shutil.copytree(repository / "chat", into / "repo" / "chat")
    return into / "repo"


class DirectGeneration:
    """One generation over Triton's gRPC stream, never cancelled (a caller that does not
    go away when Triton stops), the stream closed after its final response as the
    frontend's are (an open stream holds a model's unload even with nothing in flight)."""

    def __init__(self, url: str, i: int) -> None:
        self.tokens = 0
        self.final: str | None = None  # "error: ..." or the finish reason
        self.ended = threading.Event()
        self._responses: queue.Queue = queue.Queue()
        self.client = grpcclient.InferenceServerClient(url)
        self.client.start_stream(
            callback=lambda result, error: self._responses.put((result, error))
        )
        messages = json.dumps([{"role": "user", "content": STORY.format(i)}])
        inputs = [
            _tensor("MESSAGES", np.array([messages.encode()], dtype=object), "BYTES"),
            _tensor("MAX_TOKENS", np.array([1000], dtype=np.int32), "INT32"),
        ]
        self.client.async_stream_infer("chat", inputs, request_id=f"direct-{i}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            result, error = self._responses.get()
            if error is not None:
                self.final = f"error: {error}"
                break
            reason = result.as_numpy("FINISH_REASON")[0].decode()
            if reason:
                self.final = reason
                break
            self.tokens += 1
        self.client.stop_stream(cancel_requests=False)
        self.client.close()
        self.ended.set()

    def close(self) -> None:
        if not self.ended.is_set():
            self.client.stop_stream(cancel_requests=True)
            self.client.close()


def _tensor(name: str, array: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_triton_stops_at_once_with_uncancelled_generations_in_flight(repository, tmp_path):
    lines: list[str] = []
    server = EmbeddedTriton(_chat_only(repository, tmp_path), free_ports(), log_sink=lines.append)
    server.start(ready_timeout=180)
    generations = []
    try:
        generations = [DirectGeneration(server.grpc_url, i) for i in range(3)]
        wait_for(lambda: all(g.tokens >= 3 for g in generations), "3 generating", 120)
        started = time.monotonic()
        code = server.stop()
        took = time.monotonic() - started
    finally:
        server.stop()
        for g in generations:
            g.close()
    print(f"Triton with 3 generations in flight stopped in {took:.2f} s (exit {code})")
    assert code == 0  # before: SIGKILLed (-9) after its 30 s exit timeout
    assert took < STOP_WITHIN_S
    assert all(g.ended.wait(5) for g in generations)
    assert all("shutting down" in (g.final or "") for g in generations), [
        g.final for g in generations
    ]
    assert any("successfully unloaded 'chat'" in line for line in lines)


def test_triton_stopped_by_someone_else_ends_its_generations(repository, tmp_path):
    """SIGTERM straight to tritonserver (an orchestrator's, not the launcher's stop: no
    stop file): the chat model's readiness watch hears Triton's HTTP endpoint say no and
    ends the generations, so Triton exits cleanly instead of waiting out its exit
    timeout."""
    lines: list[str] = []
    server = EmbeddedTriton(_chat_only(repository, tmp_path), free_ports(), log_sink=lines.append)
    server.start(ready_timeout=180)
    generations = []
    try:
        generations = [DirectGeneration(server.grpc_url, i) for i in range(2)]
        wait_for(lambda: all(g.tokens >= 3 for g in generations), "2 generating", 120)
        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(STOP_WITHIN_S + 30)
        took = time.monotonic() - started
        announced = server.stop_file.exists()
    finally:
        server.stop()
        for g in generations:
            g.close()
    print(f"Triton SIGTERMed with 2 generations in flight exited in {took:.2f} s ({code})")
    assert not announced  # the launcher announced nothing: the watch did it
    assert code == 0  # not SIGKILLed after its 30 s exit timeout
    assert took < STOP_WITHIN_S
    assert all(g.ended.wait(5) for g in generations)
    assert all("shutting down" in (g.final or "") for g in generations), [
        g.final for g in generations
    ]
    assert not any("lock_exception" in line for line in lines)


# --- the whole stack -------------------------------------------------------------------


@dataclass
class Stack:
    proc: subprocess.Popen
    url: str
    grpc_port: int
    metrics_url: str
    log: Path
    triton_pid: int = 0

    def left_behind(self) -> list[str]:
        """Our tritonserver (by its gRPC port) or a backend stub of it (a stub's arguments
        name its Triton's pid), still running."""
        left = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            binary = Path(argv[0]).name
            ours = (binary == "tritonserver" and f"--grpc-port={self.grpc_port}" in argv) or (
                binary == "triton_python_backend_stub" and str(self.triton_pid) in argv[1:]
            )
            if ours:
                left.append(f"{entry.name}: {' '.join(argv)[:160]}")
        return left


def _find_triton_pid(grpc_port: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"tritonserver") and f"--grpc-port={grpc_port}".encode() in argv:
                return int(entry.name)
    raise AssertionError(f"no tritonserver on gRPC port {grpc_port}")


@pytest.fixture
def stack(repository, tmp_path):
    """`python -m frontend serve` with the real repository, on free ports, in its own
    process group (as a terminal's foreground job), ready."""
    port, grpc_port, http_port, metrics_port = (free_port() for _ in range(4))
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "frontend",
                "serve",
                "--port",
                str(port),
                "--repository",
                str(repository),
                "--triton-grpc-port",
                str(grpc_port),
                "--triton-http-port",
                str(http_port),
                "--triton-metrics-port",
                str(metrics_port),
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "INFERGATE_ENVIRONMENT": "test",
                "INFERGATE_SECRET_KEY": TEST_SECRET,
                "INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
                # Its own records, never the checkout's `.infergate/`.
                "INFERGATE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'infergate.db'}",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    s = Stack(
        proc,
        f"http://127.0.0.1:{port}",
        grpc_port,
        f"http://127.0.0.1:{metrics_port}/metrics",
        log,
    )
    try:
        wait_for(lambda: _ready(s), "the stack to be ready", timeout_s=300)
        s.triton_pid = _find_triton_pid(grpc_port)
        yield s
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if s.triton_pid:
                os.killpg(s.triton_pid, signal.SIGKILL)


def _ready(s: Stack) -> bool:
    if s.proc.poll() is not None:
        raise AssertionError(f"serve exited ({s.proc.returncode}):\n{s.log.read_text()[-3000:]}")
    try:
        return httpx.get(s.url + "/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.2)  # not listening yet: no need to spin
        return False


@dataclass
class Stream:
    """One streamed chat completion, read to its end: its content chunks, its `error`
    events, whether it ended with [DONE] and how."""

    chunks: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: bool = False
    cut: str | None = None  # the exception that ended it without [DONE]
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def ended_well(self) -> bool:
        """[DONE] after an error event or a finish reason; never cut mid-stream."""
        return self.cut is None and self.done and bool(self.errors or self.finish_reasons)


def _stream(url: str, i: int, into: Stream) -> None:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": STORY.format(i)}],
        "max_tokens": 1000,
        "stream": True,
    }
    try:
        with httpx.stream(
            "POST", url + "/v1/chat/completions", headers=ADMIN, json=body, timeout=60
        ) as response:
            event = "message"
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                    if data == "[DONE]":
                        into.done = True
                    elif event == "error":
                        into.errors.append(json.loads(data)["error"]["code"])
                    else:
                        choice = json.loads(data)["choices"][0]
                        into.chunks += 1
                        if choice.get("finish_reason"):
                            into.finish_reasons.append(choice["finish_reason"])
                elif not line:
                    event = "message"
    except httpx.HTTPError as exc:
        into.cut = f"{type(exc).__name__}: {exc}"
    finally:
        into.ended.set()


def _start_streams(url: str, n: int) -> list[Stream]:
    streams = [Stream() for _ in range(n)]
    for i, s in enumerate(streams):
        threading.Thread(target=_stream, args=(url, i, s), daemon=True).start()
    return streams


def _stop(s: Stack, signum: int, whole_group: bool) -> tuple[int | None, float]:
    started = time.monotonic()
    if whole_group:
        os.killpg(s.proc.pid, signum)
    else:
        s.proc.send_signal(signum)
    try:
        code: int | None = s.proc.wait(60)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


def _tail(s: Stack) -> str:
    return s.log.read_text()[-4000:]


def test_idle_stack_stops_in_seconds_after_a_burst(stack):
    """As the issue saw it: a burst of chat requests, all answered, then Ctrl-C. (Each
    finished generation once had its gRPC stream cancelled, which at times left Triton
    holding the chat model: no unload for the whole exit timeout.)"""
    for i in range(6):
        r = httpx.post(
            stack.url + "/v1/chat/completions",
            headers=ADMIN,
            json={
                "model": "chat",
                "messages": [{"role": "user", "content": f"hi {i}"}],
                "max_tokens": 8,
            },
            timeout=120,
        )
        assert r.status_code == 200, r.text
    code, took = _stop(stack, signal.SIGINT, whole_group=True)
    print(f"idle stack stopped by SIGINT in {took:.2f} s (exit {code})")
    assert code == 0, _tail(stack)
    assert took < STOP_WITHIN_S, _tail(stack)
    assert stack.left_behind() == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stack_stops_in_seconds_with_generations_in_flight(stack, signum):
    """Ctrl-C (or systemd's SIGTERM) reaches the whole process group: serve, the launcher.
    Three streams and one plain completion are generating when it comes."""
    streams = _start_streams(stack.url, 3)
    plain: dict[str, object] = {}

    def complete() -> None:
        body = {"model": "chat", "messages": [{"role": "user", "content": STORY.format(9)}]}
        try:
            r = httpx.post(
                stack.url + "/v1/chat/completions",
                headers=ADMIN,
                json={**body, "max_tokens": 1000},
                timeout=60,
            )
            plain["status"], plain["body"] = r.status_code, r.json()
        except (httpx.HTTPError, ValueError) as exc:
            plain["cut"] = f"{type(exc).__name__}: {exc}"

    threading.Thread(target=complete, daemon=True).start()
    wait_for(lambda: all(s.chunks >= 2 for s in streams), "3 streams generating", 120)
    wait_for(
        lambda: model_gauge(stack.metrics_url, "infergate_chat_active_sequences", "chat") >= 4,
        "the plain completion generating too",
        120,
    )
    code, took = _stop(stack, signum, whole_group=True)
    print(f"stack with 4 generations stopped by {signum.name} in {took:.2f} s (exit {code})")
    assert all(s.ended.wait(10) for s in streams)
    print("streams:", [(s.chunks, s.errors, s.finish_reasons, s.done, s.cut) for s in streams])
    print("plain completion:", plain)
    assert code == 0, _tail(stack)
    assert took < STOP_WITHIN_S, _tail(stack)
    assert all(s.ended_well for s in streams), [(s.errors, s.done, s.cut) for s in streams]
    assert "cut" not in plain and plain.get("status") in (200, 503), plain
    assert stack.left_behind() == []


def test_sigterm_to_serve_alone_with_streams_in_flight(stack):
    """A container's PID 1 gets the SIGTERM alone: serve ends the streams, then stops
    Triton itself."""
    streams = _start_streams(stack.url, 3)
    wait_for(lambda: all(s.chunks >= 2 for s in streams), "3 streams generating", 120)
    code, took = _stop(stack, signal.SIGTERM, whole_group=False)
    print(f"stack with 3 streams stopped by SIGTERM to serve in {took:.2f} s (exit {code})")
    assert all(s.ended.wait(10) for s in streams)
    assert code == 0, _tail(stack)  # before: -15, uvicorn's re-raised SIGTERM
    assert took < STOP_WITHIN_S, _tail(stack)
    assert all(s.ended_well for s in streams), [(s.errors, s.done, s.cut) for s in streams]
    assert stack.left_behind() == []
