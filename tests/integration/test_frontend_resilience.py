"""Failure behaviour with real parts: Triton stopped and restarted, queue full, deadlines,
oversized bodies, PII in logs, several workers."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.triton_launcher import EmbeddedTriton
from frontend.app import create_app
from frontend.observability.logging import JsonFormatter
from procs.ports import free_port, port_in_use, wait_port_free
from procs.wait import wait_for, wait_http

from .conftest import (
    ADMIN,
    ADMIN_KEY,
    ROOT,
    TEST_SECRET,
    LiveFrontend,
    free_ports,
    frontend_settings,
)

pytestmark = pytest.mark.integration


def _sentiment_only(repository: Path, into: Path, **config_changes) -> Path:
    shutil.copytree(repository / "sentiment", into / "sentiment")
    path = into / "sentiment" / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    if "max_queue_size" in config_changes:
        config.dynamic_batching.default_queue_policy.max_queue_size = config_changes[
            "max_queue_size"
        ]
    if "instances" in config_changes:
        config.instance_group[0].count = config_changes["instances"]
    path.write_text(text_format.MessageToString(config))
    return into


def _serve(
    *args: str, database: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`python -m frontend serve` in a subprocess on a free port, once it is ready; its
    records in a SQLite file in `database` (a test's own directory, never the
    checkout's `.infergate/`)."""
    database.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "frontend", "serve", "--port", str(port), *args],
        cwd=ROOT,
        env={
            **os.environ,
            "INFERGATE_ENVIRONMENT": "test",
            "INFERGATE_SECRET_KEY": TEST_SECRET,
            "INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "INFERGATE_DATABASE__URL": f"sqlite+aiosqlite:///{database / 'infergate.db'}",
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health/ready", timeout_s=120)
    except RuntimeError:
        proc.kill()
        raise
    return proc, url


@pytest.mark.timing
def test_triton_down_then_back_without_restarting_the_app(repository, tmp_path):
    repo = _sentiment_only(repository, tmp_path)
    ports = free_ports()
    triton = EmbeddedTriton(repo, ports).start(120)
    live = LiveFrontend(create_app(frontend_settings(triton.grpc_url, repo)))
    try:
        with httpx.Client(base_url=live.url, timeout=30, headers=ADMIN) as http:
            assert http.get("/health/ready").status_code == 200
            assert (
                http.post("/v1/models/sentiment/predict", json={"inputs": "great"}).status_code
                == 200
            )
            triton.stop()
            ready = http.get("/health/ready")
            assert ready.status_code == 503 and ready.headers["Retry-After"] == "1"
            assert ready.json()["components"]["triton"]["status"] == "down"
            assert http.get("/health/live").status_code == 200
            down = http.post("/v1/models/sentiment/predict", json={"inputs": "great"})
            assert down.status_code == 503 and down.headers["Retry-After"] == "1"
            assert down.json()["error"]["code"] == "upstream_unavailable"

            wait_port_free(ports.grpc)
            triton = EmbeddedTriton(repo, ports).start(120)
            back_at = time.monotonic()
            while time.monotonic() - back_at < 10:
                if http.get("/health/ready").status_code == 200:
                    break
                time.sleep(0.1)
            recovered_in = time.monotonic() - back_at
            print(f"ready again {recovered_in:.2f}s after Triton was ready")
            assert recovered_in < 2.0
            again = http.post("/v1/models/sentiment/predict", json={"inputs": "great"})
            assert again.status_code == 200
    finally:
        live.stop()
        triton.stop()


@pytest.mark.timing
def test_queue_full_is_503_at_once(repository, tmp_path):
    repo = _sentiment_only(repository, tmp_path, max_queue_size=1, instances=1)
    with EmbeddedTriton(repo, free_ports()).start(120) as triton:
        live = LiveFrontend(create_app(frontend_settings(triton.grpc_url, repo)))
        texts = [f"a fairly long review sentence number {i} about the film" for i in range(64)]

        def call(_: int) -> tuple[int, float, dict]:
            started = time.perf_counter()
            r = httpx.post(
                live.url + "/v1/models/sentiment/predict",
                headers=ADMIN,
                json={"inputs": texts},
                timeout=60,
            )
            return r.status_code, time.perf_counter() - started, dict(r.headers)

        try:
            # 8 callers against 1 instance + a queue of 1: most are refused by Triton.
            with cf.ThreadPoolExecutor(8) as pool:
                results = list(pool.map(call, range(40)))
        finally:
            live.stop()
    statuses = [s for s, _, _ in results]
    rejected = [(t, h) for s, t, h in results if s == 503]
    print(
        f"queue full: {statuses.count(200)} ok, {len(rejected)} rejected, slowest rejection "
        f"{max(t for t, _ in rejected) * 1000:.0f} ms"
        if rejected
        else statuses
    )
    assert set(statuses) <= {200, 503}
    assert rejected and statuses.count(200) > 0
    assert all(h["retry-after"] == "1" for _, h in rejected)
    # The frontend's own time to answer each rejection (Server-Timing); the client-side time
    # above also holds this 2-core machine's contention with the busy model and the test's
    # own 8 client threads. The figure is the median over the rejections (a single one can
    # wait for a core while the model and the clients saturate both); the worst is printed.
    server_ms = sorted(
        float(re.search(r"app;dur=([\d.]+)", h["server-timing"]).group(1)) for _, h in rejected
    )
    median_ms = statistics.median(server_ms)
    print(
        f"rejections answered by the frontend in median {median_ms:.1f} ms, "
        f"max {server_ms[-1]:.1f} ms"
    )
    assert len(rejected) >= 10, "too few rejections for a figure"
    assert median_ms < 100


def test_deadline_exceeded_is_504(triton, repository):
    settings = frontend_settings(triton.grpc_url, repository, timeouts={"intent": 0.001})
    live = LiveFrontend(create_app(settings))
    try:
        r = httpx.post(
            live.url + "/v1/models/intent/predict",
            headers=ADMIN,
            json={"inputs": ["book a flight"] * 64},
            timeout=30,
        )
    finally:
        live.stop()
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "deadline_exceeded"
    assert "0.001 s" in r.json()["error"]["message"]


def test_oversized_body_refused_before_it_is_sent(frontend):
    with socket.create_connection(("127.0.0.1", frontend.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/models/sentiment/predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
        )
        started = time.monotonic()
        reply = b""  # nothing of the 50 MB body is ever sent
        while b'"code"' not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413")
    assert '"code":"payload_too_large"' in reply
    assert time.monotonic() - started < 2


def test_no_pii_or_secrets_in_logs(http):
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    seeds = {
        "email": "jane.doe@example.com",
        "card": "4111 1111 1111 1111",
        "api_key": "ig_live_k3y1d_S3cr3tS3cr3tS3cr3t",
        "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJl",
        "phone": "+1 (555) 123-4567",
    }
    text = " ".join(seeds.values())
    try:
        http.post(
            "/v1/models/sentiment/predict",
            json={"inputs": text},
            headers={"Authorization": f"Bearer {seeds['bearer']}", "X-API-Key": seeds["api_key"]},
        )
        http.post(
            f"/v1/models/sentiment/predict?email={seeds['email']}&key={seeds['api_key']}",
            json={"inputs": text, "colour": seeds["card"]},
        )
        http.get(f"/v1/models/{seeds['email']}")
        http.post(
            "/v1/models/sentiment/predict",
            content=b'{"inputs": "' + text.encode() + b"\r\n\x1b[31m",
            headers={"Content-Type": "application/json"},
        )
        # The access record is written just after the response is sent: wait for it.
        deadline = time.monotonic() + 5
        while buffer.getvalue().count('"infergate.access"') < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        root.removeHandler(handler)
    logged = buffer.getvalue()
    records = [line for line in logged.splitlines() if line.strip()]
    assert len([r for r in records if '"infergate.access"' in r]) >= 4
    for name, seed in seeds.items():
        assert seed not in logged, f"{name} leaked into the logs"
    assert "S3cr3t" not in logged and "1111 1111" not in logged
    assert "[EMAIL]" in logged and "[API_KEY]" in logged


def test_metrics_add_up_across_workers(triton, repository, tmp_path, redis_server):
    proc, url = _serve(
        "--workers",
        "2",
        "--triton-url",
        triton.grpc_url,
        "--repository",
        str(repository),
        # Not beside the metrics: prometheus_client reads every *.db file there as its own.
        database=tmp_path / "database",
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "INFERGATE_REDIS__URL": redis_server.url},
    )
    try:
        n = 40
        with cf.ThreadPoolExecutor(8) as pool:  # new connections spread over the workers
            codes = list(
                pool.map(
                    lambda i: (
                        httpx.post(
                            url + "/v1/models/sentiment/predict",
                            headers=ADMIN,
                            json={"inputs": f"nice {i}"},
                            timeout=30,
                        ).status_code
                    ),
                    range(n),
                )
            )
        assert codes == [200] * n
        text = httpx.get(url + "/metrics", timeout=10).text
    finally:
        proc.terminate()
        proc.wait(30)
    pattern = (
        r'^infergate_requests_total\{[^\n]*model="sentiment"[^\n]*status="200"'
        r"[^\n]*\} (\S+)$"
    )
    total = sum(float(v) for v in re.findall(pattern, text, re.M))
    pids = {p.name.split("_")[-1] for p in tmp_path.glob("counter_*.db")}
    print(f"{total:.0f} requests counted from {len(pids)} worker files")
    assert total == n
    assert len(pids) == 2


def _triton_metric(triton, name: str, model: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(triton.metrics_url, timeout=5).read().decode()
    pattern = rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def _in_triton(triton, model: str) -> float:
    """Requests Triton holds for `model`: queued plus executing."""
    return _triton_metric(triton, "nv_inference_pending_request_count", model) + _triton_metric(
        triton, "infergate_runner_active_requests", model
    )


@pytest.mark.timing
def test_client_disconnect_cancels_the_work(triton, repository):
    """docs/reliability.md, "client disconnect": the handler ends in < 0.5 x the model time, Triton
    sees the cancel and stops the batch early."""
    # Its own frontend with a long deadline: the batch must run long enough to be cancelled
    # (5-10 s on these cores), never long enough to meet the default 10 s deadline.
    live = LiveFrontend(
        create_app(frontend_settings(triton.grpc_url, repository, timeouts={"sentiment": 60}))
    )
    try:
        _disconnect_cancels(live, triton)
    finally:
        live.stop()


def _disconnect_cancels(frontend: LiveFrontend, triton) -> None:
    http = httpx.Client(base_url=frontend.url, headers=ADMIN, timeout=90)
    texts = [
        f"long review {i}: " + "the plot meanders and the acting is uneven " * 30 for i in range(64)
    ]
    full = http.post("/v1/models/sentiment/predict", json={"inputs": texts})
    assert full.status_code == 200
    model_ms = float(re.search(r"triton;dur=([\d.]+)", full.headers["server-timing"]).group(1))
    assert model_ms > 500, "the batch must take long enough to cancel"

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("infergate.access")
    access.addHandler(handler)
    cancelled_before = _triton_metric(triton, "infergate_runner_cancelled_requests", "sentiment")
    body = json.dumps({"inputs": texts}).encode()
    try:
        with socket.create_connection(("127.0.0.1", frontend.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/models/sentiment/predict HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + f"X-API-Key: {ADMIN_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            # Once the runner executes the batch, the client gives up. (Not merely queued:
            # Triton drops a request cancelled in its queue before the runner sees it.)
            wait_for(
                lambda: _triton_metric(triton, "infergate_runner_active_requests", "sentiment") > 0,
                "the runner to execute the request",
            )
        deadline = time.monotonic() + model_ms / 1000
        while '"status":499' not in buffer.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        access.removeHandler(handler)
    record = next(
        json.loads(line) for line in buffer.getvalue().splitlines() if '"status":499' in line
    )
    print(
        f"model time {model_ms:.0f} ms; handler ended {record['duration_ms']:.0f} ms after "
        "the request arrived"
    )
    assert record["duration_ms"] < 0.5 * model_ms
    wait_for(
        lambda: (
            _triton_metric(triton, "infergate_runner_cancelled_requests", "sentiment")
            > cancelled_before
        ),
        "the runner to count the cancellation",
        timeout_s=model_ms / 1000 + 5,  # it checks between 32-row chunks
    )
    assert (
        http.post("/v1/models/sentiment/predict", json={"inputs": "still fine"}).status_code == 200
    )
    http.close()


def test_sigterm_finishes_in_flight_and_refuses_new(triton, repository, tmp_path):
    """docs/reliability.md, "frontend SIGTERM": SIGTERM under load, in-flight requests complete, new
    ones are refused."""
    import signal

    proc, url = _serve(
        "--triton-url", triton.grpc_url, "--repository", str(repository), database=tmp_path
    )
    try:

        def slow(n: int) -> int:
            # Distinct texts: identical ones would be answered by one cached inference.
            texts = [f"{n}.{i}: the plot meanders and the acting is uneven " * 3 for i in range(32)]
            return httpx.post(
                url + "/v1/models/sentiment/predict",
                headers=ADMIN,
                json={"inputs": texts},
                timeout=60,
            ).status_code

        def refused() -> bool:
            try:
                httpx.get(url + "/health/live", timeout=5)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                # Refused, or (a connection the kernel accepted just as uvicorn closed its
                # socket, seen once on a clean-clone run) reset with no answer: both refuse.
                return True
            return False

        with cf.ThreadPoolExecutor(4) as pool:
            in_flight = [pool.submit(slow, i) for i in range(4)]
            # All four inside Triton: a request still being sent when the signal comes is
            # refused like a new one (its connection has no request in flight yet).
            wait_for(lambda: _in_triton(triton, "sentiment") >= 4, "4 requests inside Triton")
            proc.send_signal(signal.SIGTERM)
            # New connections are refused soon after the signal (uvicorn closes its socket)
            # while the batches sent before it are still being answered.
            wait_for(refused, "the listening socket to close", timeout_s=10)
            assert [f.result() for f in in_flight] == [200] * 4
        # uvicorn re-raises the signal once the graceful shutdown is done
        assert proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_to_the_stack_stops_embedded_triton_too(repository, tmp_path):
    import signal

    repo = _sentiment_only(repository, tmp_path)
    grpc_port = free_port()
    proc, _ = _serve(
        "--repository",
        str(repo),
        "--triton-grpc-port",
        str(grpc_port),
        "--triton-http-port",
        str(free_port()),
        "--triton-metrics-port",
        str(free_port()),
        database=tmp_path,
    )
    try:
        assert port_in_use("127.0.0.1", grpc_port)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        wait_port_free(grpc_port, timeout_s=30)
        assert not port_in_use("127.0.0.1", grpc_port), "Triton outlived the stack"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.timing
def test_triton_killed_hard_under_load(repository, tmp_path):
    """docs/reliability.md, "Triton killed": Triton SIGKILLed for ~10 s at 20 req/s: only 503 +
    Retry-After, ready false within 2 s, first success within 2 s of Triton being ready again."""
    import threading

    repo = _sentiment_only(repository, tmp_path)
    ports = free_ports()
    triton = EmbeddedTriton(repo, ports).start(120)
    live = LiveFrontend(create_app(frontend_settings(triton.grpc_url, repo)))
    results: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=live.url, timeout=10, headers=ADMIN) as http:
            while not stop.is_set():
                r = http.post("/v1/models/sentiment/predict", json={"inputs": "good"})
                results.append((time.monotonic(), r.status_code, r.headers.get("retry-after")))
                stop.wait(0.05)  # ~20 req/s

    def ready_at(after: float, want: int) -> float:
        while True:
            if httpx.get(live.url + "/health/ready", timeout=5).status_code == want:
                return time.monotonic() - after
            time.sleep(0.05)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1)  # a duration: the load runs 1 s before the kill
        killed_at = time.monotonic()
        triton.kill()  # Triton and its backend stubs, SIGKILL
        not_ready_in = ready_at(killed_at, 503)
        time.sleep(10)  # a duration: the outage lasts 10 s under load
        wait_port_free(ports.grpc)
        triton = EmbeddedTriton(repo, ports).start(120)
        back_at = time.monotonic()
        first_ok = None
        while first_ok is None and time.monotonic() - back_at < 10:
            first_ok = next(
                (t - back_at for t, s, _ in list(results) if t > back_at and s == 200), None
            )
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(15)
        live.stop()
        triton.stop()
    statuses = {s for _, s, _ in results}
    failures = [(s, ra) for _, s, ra in results if s != 200]
    print(
        f"{len(results)} requests, not ready {not_ready_in:.2f}s after the kill, first "
        f"success {first_ok:.2f}s after Triton was ready; statuses {sorted(statuses)}"
    )
    assert statuses <= {200, 503}
    assert failures and all(ra == "1" for _, ra in failures)
    assert not_ready_in < 2.0
    assert first_ok is not None and first_ok < 2.0


def test_a_model_that_fails_to_load_leaves_the_others_serving(repository, tmp_path):
    """docs/reliability.md, "one model broken": sentiment's artifact is broken; Triton (not strict,
    as `serve` runs it) serves intent; sentiment's routes answer 503 + Retry-After, intent's 200,
    live 200, and readiness names the broken model."""
    repo = tmp_path / "repo"
    for model in ("sentiment", "intent"):
        shutil.copytree(repository / model, repo / model)
    (repo / "sentiment" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with EmbeddedTriton(repo, free_ports(), strict=False).start(180) as triton:
        assert set(triton.failed_models) == {"sentiment"}
        live = LiveFrontend(create_app(frontend_settings(triton.grpc_url, repo)))
        try:
            with httpx.Client(base_url=live.url, timeout=30, headers=ADMIN) as http:
                broken = http.post("/v1/models/sentiment/predict", json={"inputs": "great"})
                assert broken.status_code == 503 and broken.headers["Retry-After"] == "1"
                assert broken.json()["error"]["code"] == "model_unavailable"
                ok = http.post("/v1/models/intent/predict", json={"inputs": "book a flight"})
                assert ok.status_code == 200
                assert http.get("/health/live").status_code == 200
                ready = http.get("/health/ready").json()
                assert ready["components"]["model:sentiment"]["status"] == "down"
                assert ready["components"]["model:intent"]["status"] == "up"
        finally:
            live.stop()
