"""A private redis-server on a free port: nothing saved to disk, loopback only, gone with
this process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from .ports import LOOPBACK, free_port
from .process import exited, start, stop
from .wait import wait_for


def redis_server_command(port: int, *, workdir: Path | None = None) -> list[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    cmd = [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
    cmd += ["--protected-mode", "yes"]
    # Its working directory: where it would write, were it ever to (default: ours).
    return cmd + (["--dir", str(workdir)] if workdir is not None else [])


def start_redis(
    port: int | None = None, *, workdir: Path | None = None, timeout_s: float = 20.0
) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on `port` (default: a free one), once it answers PING; returns the
    process and its URL. Given the same port again, it restarts one a test killed."""
    port = port if port is not None else free_port()
    proc = start(redis_server_command(port, workdir=workdir))
    try:
        wait_redis(port, proc=proc, timeout_s=timeout_s)
    except BaseException:
        stop(proc)
        raise
    return proc, f"redis://{LOOPBACK}:{port}/0"


def wait_redis(
    port: int, *, proc: subprocess.Popen[Any] | None = None, timeout_s: float = 20.0
) -> float:
    """Until the redis-server on `port` answers PING; gives up at once if `proc` exits."""
    import redis

    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    try:
        return wait_for(
            answers,
            f"redis-server on port {port} to answer PING",
            timeout_s,
            interval_s=0.05,
            stop_early=None if proc is None else lambda: exited(proc),
        )
    finally:
        client.close()
