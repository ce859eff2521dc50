"""The embedded Triton launcher: start, readiness, clean stop, clear failures."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest

from export.triton_launcher import EmbeddedTriton, TritonLaunchError, TritonPorts
from procs.ports import port_in_use

from .conftest import free_ports

pytestmark = pytest.mark.integration


def _small_repository(repository: Path, into: Path) -> Path:
    """A repository with one model, so that these starts are quick."""
    target = into / "repo"
    shutil.copytree(repository / "sentiment", target / "sentiment")
    return target


def test_start_ready_and_clean_stop(repository, tmp_path):
    ports = free_ports()
    lines: list[str] = []
    server = EmbeddedTriton(_small_repository(repository, tmp_path), ports, log_sink=lines.append)
    server.start(ready_timeout=120)
    try:
        assert server.is_ready()
        assert port_in_use("127.0.0.1", ports.grpc)
    finally:
        code = server.stop()
    assert code == 0
    assert any("successfully loaded 'sentiment'" in line for line in lines)
    assert not server.is_ready()
    assert not port_in_use("127.0.0.1", ports.grpc)


def test_taken_port_fails_fast_with_a_clear_message(repository, tmp_path):
    ports = free_ports()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports.grpc))
        blocker.listen()
        started = time.monotonic()
        with pytest.raises(TritonLaunchError, match=f"gRPC port {ports.grpc} already in use"):
            EmbeddedTriton(_small_repository(repository, tmp_path), ports).start(60)
        assert time.monotonic() - started < 5


def test_model_that_fails_to_load_is_reported_not_hung(repository, tmp_path):
    repo = _small_repository(repository, tmp_path)
    (repo / "sentiment" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    started = time.monotonic()
    with pytest.raises(TritonLaunchError) as err:
        EmbeddedTriton(repo, free_ports()).start(ready_timeout=120)
    assert "failed to load 'sentiment'" in str(err.value)
    assert time.monotonic() - started < 60


def test_missing_repository_is_reported(tmp_path):
    with pytest.raises(TritonLaunchError, match="does not exist"):
        EmbeddedTriton(tmp_path / "nope", TritonPorts(1, 2, 3)).start(5)


def test_cli_stops_on_repeated_signals(repository, tmp_path):
    """The CLI's signal handler only sets a flag: a burst of SIGTERM/SIGINT while it waits
    must stop Triton and exit 0 (an Event.set() in the handler once deadlocked it)."""
    import signal
    import subprocess
    import sys

    ports = free_ports()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "export.triton_launcher",
            "--repository",
            str(_small_repository(repository, tmp_path)),
            "--grpc-port",
            str(ports.grpc),
            "--http-port",
            str(ports.http),
            "--metrics-port",
            str(ports.metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("Triton ready")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGTERM):
            proc.send_signal(sig)
            time.sleep(0.01)
        assert proc.wait(40) == 0
        assert not port_in_use("127.0.0.1", ports.grpc)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_admin_apis_need_the_launch_key_and_inference_does_not(repository, tmp_path):
    """Triton's own ports have no authentication: its admin-type APIs (repository
    control, logging, tracing, shared memory, statistics, model configuration) answer
    only with this launch's key; health, metadata and inference stay open."""
    import urllib.error
    import urllib.request

    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    def http(server: EmbeddedTriton, path: str, post: bool, headers: dict) -> int:
        request = urllib.request.Request(
            server.http_url + path,
            data=b"{}" if post else None,
            method="POST" if post else "GET",
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    with EmbeddedTriton(_small_repository(repository, tmp_path), free_ports()) as server:
        wrong = {"infergate-triton-admin": "not-the-key"}
        for path, post in (
            ("/v2/repository/index", True),
            ("/v2/repository/models/sentiment/unload", True),
            ("/v2/logging", False),
            ("/v2/trace/setting", False),
            ("/v2/systemsharedmemory/status", False),
            ("/v2/models/sentiment/stats", False),
            ("/v2/models/sentiment/config", False),
        ):
            assert http(server, path, post, {}) == 403, path
            assert http(server, path, post, wrong) == 403, path
            if not path.endswith("/unload"):
                assert http(server, path, post, server.admin_headers) == 200, path
        for path in ("/v2/health/ready", "/v2", "/v2/models/sentiment"):
            assert http(server, path, False, {}) == 200, path

        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for call in (
                lambda h: client.get_model_repository_index(headers=h),
                lambda h: client.get_log_settings(headers=h),
                lambda h: client.update_log_settings({"log_verbose_level": 1}, headers=h),
                lambda h: client.get_inference_statistics(headers=h),
                lambda h: client.get_model_config("sentiment", headers=h),
            ):
                with pytest.raises(InferenceServerException, match="restricted"):
                    call(None)
                call(server.grpc_admin_headers)
            client.update_log_settings({"log_verbose_level": 0}, headers=server.grpc_admin_headers)
            assert client.is_server_ready() and client.get_model_metadata("sentiment")
            text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            text.set_data_from_numpy(np.array([["a wonderful film"]], dtype=object))
            result = client.infer("sentiment", [text])  # no key needed to infer
            assert result.as_numpy("LABEL").shape == (1, 1)
        finally:
            client.close()
