"""The private PostgreSQL of the tests (procs/postgres_server.py), without starting one:
how it is run (as another account when root, the parent-death signal after the change of
user), where the binaries are found, and the wire-protocol parsing of its probe. The
integration tests start real ones (tests/integration/conftest.py `postgres_server`)."""

from __future__ import annotations

import pwd
import struct
import tempfile
import time
from pathlib import Path

import pytest

from procs import postgres_server as pg
from procs.ports import free_port
from procs.process import start_python
from procs.wait import WaitError


def account(uid: int = 54321, gid: int = 54321) -> pwd.struct_passwd:
    return pwd.struct_passwd(("pgtest", "x", uid, gid, "", "/nonexistent", "/bin/false"))


def test_not_root_runs_the_command_as_given():
    assert pg.as_account(["postgres", "-D", "d"], None) == ["postgres", "-D", "d"]


def test_as_root_the_parent_death_signal_is_set_after_the_change_of_user():
    """The kernel clears the parent-death signal when the credentials change: set before
    (as procs.process does for every child), a server would outlive a killed test run."""
    cmd = pg.as_account(["postgres"], account())
    assert cmd[0].endswith("setpriv") and cmd[-2:] == ["--", "postgres"]
    assert cmd.index("--reuid=54321") < cmd.index("--pdeathsig=TERM")
    assert "--regid=54321" in cmd and "--clear-groups" in cmd


def test_a_directory_the_account_cannot_enter_is_refused_before_initdb():
    # Not under tmp_path: pytest's base temp is 0700 itself (why the fixture uses mkdtemp).
    with tempfile.TemporaryDirectory() as top:
        Path(top).chmod(0o755)
        private = Path(top) / "private"
        (private / "cluster").mkdir(parents=True)
        private.chmod(0o700)
        assert not pg._reachable(private / "cluster", account())
        with pytest.raises(PermissionError, match="not reachable by the account 'pgtest'"):
            pg._prepare_workdir(private / "cluster", account())
        private.chmod(0o711)
        assert pg._reachable(private / "cluster", account())


def test_the_newest_debian_server_directory_is_found_when_path_has_none(monkeypatch):
    monkeypatch.setattr(pg.shutil, "which", lambda name: None)
    found = ["/usr/lib/postgresql/9/bin/initdb", "/usr/lib/postgresql/15/bin/initdb"]
    monkeypatch.setattr(pg.glob, "glob", lambda pattern: list(found))
    assert pg.find_binary("initdb") == "/usr/lib/postgresql/15/bin/initdb"
    monkeypatch.setattr(pg.glob, "glob", lambda pattern: [])
    assert pg.find_binary("initdb") is None
    with pytest.raises(FileNotFoundError, match="apt-get install postgresql"):
        pg.binaries()


def test_the_server_keeps_committed_work_through_a_kill(monkeypatch, tmp_path):
    """fsync off is fine for tests (the OS keeps what was written), an asynchronous
    commit is not: it returns before the log record even reaches the OS."""
    monkeypatch.setattr(pg, "binaries", lambda: ("initdb", "postgres"))
    cmd = pg.postgres_command(tmp_path, 5999, tmp_path / "socket")
    settings = {cmd[i + 1] for i, part in enumerate(cmd) if part == "-c"}
    assert {"listen_addresses=127.0.0.1", "fsync=off"} <= settings
    assert not any(s.startswith("synchronous_commit") for s in settings)
    assert cmd[:7] == [
        "postgres",
        "-D",
        str(tmp_path),
        "-p",
        "5999",
        "-k",
        str(tmp_path / "socket"),
    ]


def message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def test_rows_and_errors_are_read_from_the_wire():
    row = struct.pack("!h", 3) + struct.pack("!i", 1) + b"1" + struct.pack("!i", -1)
    row += struct.pack("!i", 5) + "héé".encode()
    assert pg._data_row(row) == ("1", None, "héé")
    error = pg._error(b"SFATAL\0C57P03\0Mthe database system is starting up\0\0")
    assert error.sqlstate == "57P03" and "starting up" in str(error)


class FakeSocket:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, size: int) -> bytes:
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk


def test_a_query_error_is_raised_once_the_server_is_ready_again():
    stream = message(b"E", b'C42P01\0Mrelation "x" does not exist\0\0') + message(b"Z", b"I")
    with pytest.raises(pg.PostgresError, match="42P01"):
        pg._until_ready(FakeSocket(stream), starting=False)  # type: ignore[arg-type]
    ok = message(b"D", struct.pack("!hi", 1, 1) + b"1") + message(b"C", b"SELECT 1\0")
    assert pg._until_ready(FakeSocket(ok + message(b"Z", b"I")), starting=False) == [("1",)]  # type: ignore[arg-type]


def test_a_server_that_wants_a_password_is_refused():
    stream = message(b"R", struct.pack("!i", 5) + b"salt")  # MD5 password requested
    with pytest.raises(pg.PostgresError, match="not trust"):
        pg._until_ready(FakeSocket(stream), starting=True)  # type: ignore[arg-type]


def test_a_closed_connection_is_an_os_error():
    with pytest.raises(ConnectionError):
        pg._until_ready(FakeSocket(b"Z\0\0"), starting=True)  # type: ignore[arg-type]


def test_waiting_on_a_server_that_died_fails_at_once():
    proc = start_python(["-c", "raise SystemExit(2)"])
    started = time.monotonic()
    with pytest.raises(WaitError, match="exited with code 2"):
        pg.wait_postgres(free_port(), proc=proc, timeout_s=60)
    assert time.monotonic() - started < 30
