"""The shared process support (procs/): ports, the parent-death signal, stopping, and
waits that always end, at their deadline or as soon as what they wait on has died."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from procs.ports import distinct_free_ports, free_port, port_in_use, wait_port_free
from procs.process import exited, start_python, stop, with_parent_death_signal
from procs.wait import WaitError, http_ok, wait_for, wait_http


def test_port_probe():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use("127.0.0.1", sock.getsockname()[1])
    assert not port_in_use("127.0.0.1", free_port())


def test_distinct_free_ports_never_repeat():
    ports = distinct_free_ports(8)
    assert len(set(ports)) == 8 and not any(port_in_use("127.0.0.1", p) for p in ports)


def test_wait_port_free_fails_at_its_deadline_with_the_port_in_the_message():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(WaitError, match=f"port {port}"):
            wait_port_free(port, timeout_s=0.3)
    assert wait_port_free(port, timeout_s=1) < 1


def test_parent_death_signal_without_preexec_fn():
    cmd = with_parent_death_signal(["tritonserver", "--x"])
    assert cmd[-2:] == ["tritonserver", "--x"]
    assert cmd[0].endswith("setpriv") and cmd[1:4] == ["--pdeathsig", "TERM", "--"]


def test_wait_for_returns_the_time_waited_or_fails_at_the_deadline():
    until = time.monotonic() + 0.1
    assert 0.05 < wait_for(lambda: time.monotonic() >= until, "0.1 s") < 1
    started = time.monotonic()
    with pytest.raises(WaitError, match=r"timed out after 0\.2 s waiting for never"):
        wait_for(lambda: False, "never", 0.2)
    assert time.monotonic() - started < 1


def test_a_wait_on_a_process_that_died_fails_at_once():
    proc = start_python(["-c", "raise SystemExit(3)"])
    started = time.monotonic()
    with pytest.raises(WaitError, match="exited with code 3"):
        wait_http(f"http://127.0.0.1:{free_port()}/", timeout_s=60, proc=proc)
    assert time.monotonic() - started < 10
    assert exited(proc) is not None


def test_stop_terminates_and_returns_the_exit_code():
    proc = start_python(["-c", "import time; time.sleep(60)"])
    assert exited(proc) is None
    assert stop(proc, timeout_s=10) == -15  # SIGTERM
    assert stop(proc) == -15  # stopping it again is harmless


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ready" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_ok_is_true_only_for_200(server):
    assert http_ok(server + "/ready")
    assert not http_ok(server + "/starting")  # 503
    assert not http_ok(f"http://127.0.0.1:{free_port()}/")  # nothing listens
    assert wait_http(server + "/ready", timeout_s=5) < 1
    with pytest.raises(WaitError, match="/starting to answer 200"):
        wait_http(server + "/starting", timeout_s=0.5)


def test_start_python_uses_this_interpreter_and_adds_to_the_environment(tmp_path):
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        proc = start_python(
            ["-c", "import os, sys; print(sys.executable, os.environ['PROCS_T'])"],
            env={"PROCS_T": "yes"},
            stdout=f,
        )
        assert proc.wait(30) == 0
    assert out.read_text().split() == [sys.executable, "yes"]
