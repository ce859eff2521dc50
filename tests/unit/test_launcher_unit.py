from __future__ import annotations

import socket
import sys

from export.triton_launcher import (
    EmbeddedTriton,
    TritonPorts,
    find_install,
    port_in_use,
    prepare_backends,
)


def test_port_probe():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use("127.0.0.1", sock.getsockname()[1])


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


def test_parent_death_signal_without_preexec_fn():
    from export.triton_launcher import with_parent_death_signal

    cmd = with_parent_death_signal(["tritonserver", "--x"])
    assert cmd[-2:] == ["tritonserver", "--x"]
    assert cmd[0].endswith("setpriv") and cmd[1:4] == ["--pdeathsig", "TERM", "--"]
