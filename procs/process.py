"""Start a server process that never outlives this one, and stop it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

# Where a child's output goes: a file, or one of subprocess's constants (DEVNULL, ...).
Output = int | IO[Any]


def with_parent_death_signal(cmd: Sequence[str]) -> list[str]:
    """The child gets SIGTERM if its parent dies, so no orphan keeps the ports.

    Done with util-linux `setpriv --pdeathsig`, not a `preexec_fn`: Python code between
    fork and exec is unsafe in a process with gRPC threads (seen: the child aborted in
    gRPC's epoll poller), and without a preexec_fn subprocess can use vfork. Without
    setpriv the command runs as given."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else list(cmd)


def start(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdout: Output = subprocess.DEVNULL,
    stderr: Output = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """`cmd` as a child that dies with this process, even when this one is SIGKILLed.
    `env` is added to this process's environment; output is discarded unless a file is
    given."""
    return subprocess.Popen(
        with_parent_death_signal(cmd),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
    )


def start_python(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdout: Output = subprocess.DEVNULL,
    stderr: Output = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """This interpreter (the same virtualenv) with `args`, e.g. ["-m", "frontend", ...]."""
    return start([sys.executable, *args], env=env, cwd=cwd, stdout=stdout, stderr=stderr)


def exited(proc: subprocess.Popen[Any]) -> str | None:
    """Why waiting on `proc` is pointless (it has exited), or None while it runs."""
    code = proc.poll()
    return None if code is None else f"process {proc.pid} exited with code {code}"


def stop(
    proc: subprocess.Popen[Any], *, timeout_s: float = 30.0, kill_timeout_s: float = 10.0
) -> int | None:
    """SIGTERM, up to `timeout_s` for it to end, then SIGKILL; returns the exit code (None
    if even SIGKILL did not end it within `kill_timeout_s`)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
    try:
        return proc.wait(kill_timeout_s)
    except subprocess.TimeoutExpired:
        return None
