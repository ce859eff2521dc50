"""Free ports on this machine, and whether one is taken."""

from __future__ import annotations

import contextlib
import socket

from .wait import wait_for

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (the kernel's choice; free until someone binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def distinct_free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` free ports, all different: each socket stays bound until every port is
    chosen (separate `free_port()` calls may return a port twice)."""
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `port` fails. SO_REUSEADDR: a port a closed connection left in
    TIME_WAIT counts as free, as it is for a server that binds it the same way."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def wait_port_free(port: int, *, host: str = LOOPBACK, timeout_s: float = 30.0) -> float:
    """Until nothing holds `port` (a stopped server's, before another binds it); returns
    the seconds waited."""
    return wait_for(
        lambda: not port_in_use(host, port),
        f"port {port} on {host} to be free",
        timeout_s,
        interval_s=0.2,
    )
