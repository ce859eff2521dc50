from __future__ import annotations

import sys

from export.triton_launcher import EmbeddedTriton, TritonPorts, find_install, prepare_backends


def test_backend_directory_has_the_stub_for_this_python(tmp_path):
    install = find_install()
    backends = prepare_backends(install, into=tmp_path)
    python = backends / "python"
    assert (python / "libtriton_python.so").is_file()
    assert (python / "triton_python_backend_stub").is_file()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.root / "python_backend_stubs" / version
    assert (python / "triton_python_backend_stub").read_bytes() == (
        stub / "triton_python_backend_stub"
    ).read_bytes()


def test_command_binds_loopback_and_exits_on_error(tmp_path):
    server = EmbeddedTriton(tmp_path, TritonPorts(grpc=1, http=2, metrics=3))
    cmd = server.command(tmp_path, find_install())
    assert "--grpc-address=127.0.0.1" in cmd and "--grpc-port=1" in cmd
    assert "--exit-on-error=true" in cmd and "--strict-readiness=true" in cmd
    env = server.environment(find_install())
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
    assert "site-packages" in env["INFERGATE_PYTHONPATH"]


def test_free_ports_are_three_different_ones():
    ports = TritonPorts.free()
    assert len({ports.grpc, ports.http, ports.metrics}) == 3


# --- Triton's admin APIs (issue 11, item 8) -------------------------------------------


def test_admin_apis_need_a_random_key_per_launch(tmp_path, monkeypatch):
    from export.triton_launcher import ADMIN_KEY_ENV, RESTRICTED_APIS

    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    one = EmbeddedTriton(tmp_path, TritonPorts(grpc=1, http=2, metrics=3))
    two = EmbeddedTriton(tmp_path, TritonPorts(grpc=1, http=2, metrics=3))
    assert one.admin_key != two.admin_key and len(one.admin_key) >= 32  # never a constant
    cmd = one.command(tmp_path, find_install())
    rule = f"{','.join(RESTRICTED_APIS)}:infergate-triton-admin={one.admin_key}"
    assert f"--http-restricted-api={rule}" in cmd
    assert f"--grpc-restricted-protocol={rule}" in cmd
    # The admin-type APIs only: health, metadata and inference stay open.
    assert {"model-repository", "logging", "trace", "shared-memory", "statistics"} <= set(
        RESTRICTED_APIS
    )
    assert not {"health", "metadata", "inference"} & set(RESTRICTED_APIS)
    assert one.grpc_admin_headers == {"triton-grpc-protocol-infergate-triton-admin": one.admin_key}
    # A key the caller shares with the frontend (as `serve` does) is used as given.
    monkeypatch.setenv(ADMIN_KEY_ENV, "k" * 40)
    assert EmbeddedTriton(tmp_path, TritonPorts(1, 2, 3)).admin_key == "k" * 40


def test_frontend_sends_the_metadata_triton_expects():
    from export.triton_launcher import GRPC_ADMIN_HEADER
    from frontend.triton.client import ADMIN_METADATA

    assert ADMIN_METADATA == GRPC_ADMIN_HEADER  # two packages that share no imports


# --- stop: generations end before Triton hears of it (issue 11, item 9) ---------------


class _FakeTriton:
    def __init__(self, server: EmbeddedTriton, events: list[str]) -> None:
        self.server, self.events, self.returncode = server, events, None
        self.pid = 2**22 + 7  # no such process group: killpg finds nothing

    def poll(self):
        return self.returncode

    def send_signal(self, signum):
        announced = self.server.stop_file.exists()
        self.events.append(f"signal {signum} announced={announced}")
        self.returncode = 0

    def wait(self, timeout=None):
        return self.returncode


def test_stop_announces_then_waits_for_generations_then_signals(tmp_path, monkeypatch):
    import io
    import signal

    import export.triton_launcher as launcher

    server = EmbeddedTriton(tmp_path, TritonPorts(grpc=1, http=2, metrics=3))
    server._run_dir = tmp_path / "run"
    server._run_dir.mkdir()
    events: list[str] = []
    server.process = _FakeTriton(server, events)  # type: ignore[assignment]
    # Triton's metrics while the chat model ends its sequences: 3, then 1, then none.
    pages = iter(
        [
            'infergate_chat_active_sequences{model="chat",version="1"} 2\n'
            'infergate_chat_queued_sequences{model="chat",version="1"} 1\n',
            'infergate_chat_active_sequences{model="chat",version="1"} 1\n',
            'infergate_chat_active_sequences{model="chat",version="1"} 0\n'
            'infergate_chat_queued_sequences{model="chat",version="1"} 0\n',
        ]
    )

    def urlopen(url, timeout=None):
        page = next(pages)
        events.append(f"metrics {server.stop_file.exists()}")
        return io.BytesIO(page.encode())

    monkeypatch.setattr(launcher.urllib.request, "urlopen", urlopen)
    assert server.stop() == 0
    assert events == [
        "metrics True",  # announced before anything else ...
        "metrics True",
        "metrics True",  # ... polled until no sequence is left ...
        f"signal {signal.SIGTERM} announced=True",  # ... and only then SIGTERM
    ]
    assert not server._run_dir.exists()  # the launch's private directory is removed


def test_stop_file_reaches_triton_and_its_stubs_through_the_environment(tmp_path):
    server = EmbeddedTriton(tmp_path, TritonPorts(grpc=1, http=2, metrics=3))
    assert "INFERGATE_TRITON_STOP_FILE" not in server.environment(find_install())
    server._run_dir = tmp_path
    env = server.environment(find_install())
    assert env["INFERGATE_TRITON_STOP_FILE"] == str(tmp_path / "stopping")
