"""The embedded Triton launcher: start, readiness, clean stop, clear failures."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest

from export.triton_launcher import EmbeddedTriton, TritonLaunchError, TritonPorts, port_in_use

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
