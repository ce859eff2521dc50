"""A private PostgreSQL cluster for tests: its own data directory, a free port on loopback,
trust authentication for one role (`infergate`), gone with this process.

    proc, port = start_postgres(workdir)          # initdb on first use, then start
    rows = simple_query(port, "SELECT 1")         # [("1",)]
    kill_postgres(proc)                           # a crash: SIGKILL, every backend too
    proc, port = start_postgres(workdir, port)    # the same data and port: crash recovery

Root: `initdb` and `postgres` refuse to run as root, so when this process is root they
run as an unprivileged account instead, through util-linux `setpriv --reuid/--regid`
(the `postgres` account the Debian `postgresql` package creates, else `nobody`); the
work directory is then chowned to that account, so it must be reachable by it: a fresh
directory under /tmp (`tempfile.mkdtemp()`) is, one inside pytest's 0700 base temp is
not (a clear error says so). Not root: they run as this user.

Tuned for tests, not for durability against power loss: `fsync=off` and
`full_page_writes=off`. A killed server (`kill -9`) still restarts on the same data:
the operating system keeps what was written, and PostgreSQL's crash recovery replays
its log. Readiness is a real `SELECT 1` over the wire protocol (`simple_query`), in the
standard library only: no psql, no driver.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import subprocess
from pathlib import Path
from typing import Any

from .ports import LOOPBACK, free_port
from .process import exited, start
from .wait import WaitError, wait_for

ROLE = "infergate"  # the superuser initdb makes; trust auth, no password
SERVICE_ACCOUNTS = ("postgres", "nobody")  # who runs the server when this process is root
PROTOCOL_3 = 196608  # 3.0


class PostgresError(RuntimeError):
    """An ErrorResponse from the server (`sqlstate`: its five-character code)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{sqlstate}: {message}")
        self.sqlstate = sqlstate


# --- finding and running the binaries --------------------------------------------------


def find_binary(name: str) -> str | None:
    """`name` from PATH, else the newest `/usr/lib/postgresql/<major>/bin` (Debian keeps
    the server binaries out of PATH)."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")

    def major(path: str) -> int:
        version = Path(path).parents[1].name
        return int(version) if version.isdigit() else 0

    return max(candidates, key=major) if candidates else None


def binaries() -> tuple[str, str]:
    """(initdb, postgres), or FileNotFoundError naming the package that provides them."""
    initdb, postgres = find_binary("initdb"), find_binary("postgres")
    if initdb is None or postgres is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
    return initdb, postgres


def service_account() -> pwd.struct_passwd | None:
    """The account the server runs as when this process is root; None when it is not
    root (the server runs as this user)."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_ACCOUNTS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(f"running as root and none of the accounts {SERVICE_ACCOUNTS} exists")


def as_account(cmd: list[str], account: pwd.struct_passwd | None) -> list[str]:
    """`cmd` run as `account`. The parent-death signal is set here, after the change of
    user: the kernel clears it when the credentials change, so the one `procs.process`
    sets before this `setpriv` runs would not survive."""
    if account is None:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is needed to run PostgreSQL as root")
    return [
        setpriv,
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--clear-groups",
        "--pdeathsig=TERM",
        "--",
        *cmd,
    ]


def _reachable(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether `account` (its primary group only: setpriv clears the others) can enter
    every directory above `path`."""
    for directory in path.resolve().parents:
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == account.pw_gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _prepare_workdir(workdir: Path, account: pwd.struct_passwd | None) -> None:
    (workdir / "socket").mkdir(parents=True, exist_ok=True)
    if account is None:
        return
    if not _reachable(workdir, account):
        raise PermissionError(
            f"{workdir} is not reachable by the account {account.pw_name!r} that runs "
            "PostgreSQL (this process is root): use a directory it can enter, e.g. one "
            "from tempfile.mkdtemp()"
        )
    for path in (workdir, workdir / "socket", *workdir.rglob("*")):
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
    workdir.chmod(0o700)


def init_cluster(workdir: Path, account: pwd.struct_passwd | None = None) -> Path:
    """`workdir/data`, made by initdb unless it holds a cluster already; returns it."""
    data = workdir / "data"
    if (data / "PG_VERSION").exists():
        return data
    initdb, _ = binaries()
    cmd = [initdb, "-D", str(data), "-U", ROLE, "--auth=trust", "-E", "UTF8"]
    cmd += ["--locale=C", "--no-sync", "--no-instructions"]
    log = workdir / "initdb.log"
    with log.open("wb") as out:
        done = subprocess.run(
            as_account(cmd, account), cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"initdb failed ({done.returncode}): {' | '.join(tail)}")
    return data


def postgres_command(data: Path, port: int, socket_dir: Path) -> list[str]:
    _, postgres = binaries()
    settings = {
        "listen_addresses": LOOPBACK,
        "fsync": "off",
        "full_page_writes": "off",
        # synchronous_commit stays on: off, a commit returns before its log record has
        # even reached the operating system, and a kill -9 loses it.
        "max_connections": "200",
        "log_min_messages": "warning",
    }
    cmd = [postgres, "-D", str(data), "-p", str(port), "-k", str(socket_dir)]
    for name, value in settings.items():
        cmd += ["-c", f"{name}={value}"]
    return cmd


# --- starting, waiting, stopping -------------------------------------------------------


def start_postgres(
    workdir: Path, port: int | None = None, *, timeout_s: float = 60.0
) -> tuple[subprocess.Popen[bytes], int]:
    """A PostgreSQL server on `port` (default: a free one) over the cluster in
    `workdir/data` (made on first use), once it answers `SELECT 1`; returns the process
    and its port. Given the same workdir and port again, it restarts one a test killed
    (after crash recovery). Its log: `workdir/postgres.log`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    account = service_account()
    _prepare_workdir(workdir, account)
    data = init_cluster(workdir, account)
    port = port if port is not None else free_port()
    log = (workdir / "postgres.log").open("ab")
    try:
        proc = start(
            as_account(postgres_command(data, port, workdir / "socket"), account),
            cwd=workdir,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()  # the child has its own copy
    try:
        wait_postgres(port, proc=proc, timeout_s=timeout_s)
    except BaseException as exc:
        stop_postgres(proc)
        if isinstance(exc, WaitError):
            raise WaitError(f"{exc} (log: {workdir / 'postgres.log'})") from None
        raise
    return proc, port


def wait_postgres(
    port: int, *, proc: subprocess.Popen[Any] | None = None, timeout_s: float = 60.0
) -> float:
    """Until the server on `port` answers `SELECT 1` (not merely accepts a connection: a
    server still recovering refuses queries); gives up at once if `proc` exits."""

    def answers() -> bool:
        try:
            return simple_query(port, "SELECT 1", timeout_s=2.0) == [("1",)]
        except (OSError, PostgresError):
            return False

    return wait_for(
        answers,
        f"PostgreSQL on port {port} to answer SELECT 1",
        timeout_s,
        interval_s=0.05,
        stop_early=None if proc is None else lambda: exited(proc),
    )


def _children(pid: int) -> list[int]:
    found = []
    for stat_file in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(stat_file).read_text()
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(stat_file.split("/")[2]))
    return found


def _gone(pid: int) -> bool:
    """No such process, or a zombie (it has ended; only its exit status is left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def kill_postgres(proc: subprocess.Popen[Any], *, timeout_s: float = 10.0) -> None:
    """A crash: SIGKILL to the server and every backend at once, then wait until all are
    gone (a backend still attached to the old shared memory would make the restart on the
    same data refuse). Stopped first, so that it forks no backend while they are listed."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGSTOP)
    children = _children(proc.pid)
    proc.kill()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    proc.wait(timeout_s)
    wait_for(
        lambda: all(_gone(child) for child in children),
        f"the backends of PostgreSQL {proc.pid} to end",
        timeout_s,
        interval_s=0.02,
    )


def stop_postgres(proc: subprocess.Popen[Any], *, timeout_s: float = 30.0) -> int | None:
    """A fast shutdown (SIGINT: sessions are ended, the data is checkpointed); SIGKILL if
    it takes longer than `timeout_s`. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_postgres(proc)
        return proc.returncode


# --- the wire protocol, as little as a probe and a fixture need -------------------------


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def _read_exact(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionError("PostgreSQL closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    header = _read_exact(sock, 5)
    (length,) = struct.unpack("!i", header[1:])
    return header[:1], _read_exact(sock, length - 4)


def _error(payload: bytes) -> PostgresError:
    fields = {part[:1]: part[1:].decode(errors="replace") for part in payload.split(b"\0") if part}
    return PostgresError(fields.get(b"C", "?????"), fields.get(b"M", "unknown error"))


def _data_row(payload: bytes) -> tuple[str | None, ...]:
    (count,) = struct.unpack_from("!h", payload)
    offset = 2
    values: list[str | None] = []
    for _ in range(count):
        (size,) = struct.unpack_from("!i", payload, offset)
        offset += 4
        if size < 0:
            values.append(None)
        else:
            values.append(payload[offset : offset + size].decode())
            offset += size
    return tuple(values)


def _until_ready(sock: socket.socket, *, starting: bool) -> list[tuple[str | None, ...]]:
    """Read messages until ReadyForQuery; returns the rows of the DataRows. An error
    while `starting` is raised at once (the server closes the connection after it);
    a query's error once the server is ready again."""
    rows: list[tuple[str | None, ...]] = []
    error: PostgresError | None = None
    while True:
        kind, payload = _read_message(sock)
        if kind == b"E":
            if starting:
                raise _error(payload)
            error = error or _error(payload)
        elif kind == b"R":
            (code,) = struct.unpack_from("!i", payload)
            if code != 0:  # anything but AuthenticationOk: a password is wanted
                raise PostgresError("28000", f"authentication method {code} is not trust")
        elif kind == b"D":
            rows.append(_data_row(payload))
        elif kind == b"Z":
            break
    if error is not None:
        raise error
    return rows


def simple_query(
    port: int,
    sql: str,
    *,
    database: str = "postgres",
    user: str = ROLE,
    timeout_s: float = 10.0,
) -> list[tuple[str | None, ...]]:
    """Run `sql` (one statement, outside any transaction: CREATE DATABASE works) over a
    new TCP connection with trust auth; returns the rows, every value as text (or None).
    A server that refuses (starting up, recovering, no such database) raises
    PostgresError; no server, OSError."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
        params = f"user\0{user}\0database\0{database}\0client_encoding\0UTF8\0\0".encode()
        startup = struct.pack("!ii", len(params) + 8, PROTOCOL_3) + params
        sock.sendall(startup)
        _until_ready(sock, starting=True)
        try:
            sock.sendall(_message(b"Q", sql.encode() + b"\0"))
            return _until_ready(sock, starting=False)
        finally:
            with contextlib.suppress(OSError):
                sock.sendall(_message(b"X", b""))
