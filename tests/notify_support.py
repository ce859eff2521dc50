"""Real servers for the notification tests: an HTTP receiver on loopback that records
every POST and answers a scripted status, and an SMTP server (aiosmtpd) that keeps every
message. Both are started by the test on a free port and stopped after it.

`verifier()` is the webhook verifier exactly as docs/webhooks.md publishes it."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from procs.ports import free_port

DOCS = Path(__file__).resolve().parents[1] / "docs" / "webhooks.md"
MARKER = "<!-- verifier: tests/unit/test_notify_signing.py runs this block as written -->"


def verifier() -> Callable[..., bool]:
    """The published verifier: the first python block after the marker, run as written."""
    text = DOCS.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert block is not None
    namespace: dict[str, Any] = {}
    exec(block.group(1), namespace)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived


@dataclass
class Receiver:
    """POSTs recorded in arrival order; each answered with the next scripted status
    (then `default`), after `delay_s`."""

    statuses: list[int] = field(default_factory=list)
    default: int = 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, time.time())
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)  # a slow receiver: the answer comes late
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender was killed while we answered: what the test wants

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        """At least `count` POSTs (polled every 20 ms), failing after the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} arrived"
            time.sleep(0.02)


class _Keep:
    def __init__(self, refuse: Callable[[], bool]) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.refuse = refuse

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        del server, session
        if self.refuse():
            return "451 try again later"
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 OK"


class SmtpServer:
    """aiosmtpd on loopback (plain SMTP: the tests' mail settings say security none);
    `down` makes it answer 451 to every message (a transient outage)."""

    def __init__(self) -> None:
        self.down = False
        self.handler = _Keep(lambda: self.down)
        self._port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self._port)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    @property
    def port(self) -> int:
        return self._port

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[tuple[list[str], email.message.EmailMessage]]:
        return self.handler.messages

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} mails"
            time.sleep(0.02)
        return list(self.messages)

    def mail_settings(self) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "sender": "infergate@example.com",
            "connect_timeout_s": 2.0,
            "timeout_s": 5.0,
        }
