"""The chat model's watch on Triton's readiness, for a Triton stopped by someone other
than the embedded launcher (which announces its stops with a file instead).

Triton finalizes a model only once every request has had its final response, so a
generation nobody cancels would hold Triton's stop for its whole exit timeout. While
sequences are generating, the watch asks Triton every `interval_s` whether this model is
still ready; once Triton stops (or unloads the model) the answer is no, and seen twice in a
row, after Triton had said yes, the engine is stopped: every sequence gets its final error
within one step.

The question goes to Triton's HTTP endpoint (`GET /v2/models/<name>/versions/<v>/ready`),
not through `pb_utils.is_model_ready`: that call, made from a second thread of the stub
while Triton executed a request, aborted the whole server
(`boost::interprocess::lock_exception` in TRITONBACKEND_ModelInstanceExecute) on 4 of 12
starts whose first chat request met it, and on 0 of 12 without it.
"""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol

# Where Triton's HTTP endpoint is: the embedded launcher sets it; elsewhere the model's
# config parameter `triton_http_url`, else Triton's default port on this host.
HTTP_URL_ENV = "INFERGATE_TRITON_HTTP_URL"
DEFAULT_HTTP_URL = "http://127.0.0.1:8000"


class Engine(Protocol):
    @property
    def stopping(self) -> bool: ...
    @property
    def busy(self) -> bool: ...
    def request_stop(self) -> None: ...


def model_ready_url(
    environ: Mapping[str, str], params: Mapping[str, str], model: str, version: str
) -> str:
    base = environ.get(HTTP_URL_ENV) or params.get("triton_http_url") or DEFAULT_HTTP_URL
    name = urllib.parse.quote(model, safe="")
    return f"{base.rstrip('/')}/v2/models/{name}/versions/{version}/ready"


def http_ready(url: str, timeout_s: float = 2.0) -> Callable[[], bool | None]:
    """Triton's answer: True (200), False (another status, or nobody listening: the
    endpoint has stopped), None (no answer in time: a busy server proves nothing)."""
    # No proxy: the probe is for this host's Triton, and an HTTP(S)_PROXY set for the
    # model's environment would send it elsewhere (and answer for another server).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def ask() -> bool | None:
        try:
            with opener.open(url, timeout=timeout_s) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False  # 400 "Server not ready" / model not ready
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                return None
            return False  # refused: the HTTP endpoint is gone
        except TimeoutError:
            return None
        except OSError:
            return False

    return ask


class ServerWatch:
    def __init__(
        self, ready: Callable[[], bool | None], engine: Engine | Any, interval_s: float = 0.2
    ) -> None:
        self._ready = ready
        self.engine = engine
        self.interval_s = interval_s
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chat-server-watch", daemon=True)

    def start(self) -> ServerWatch:
        self._thread.start()
        return self

    def close(self) -> None:
        # Not joined: a question in flight may take its timeout to end, which finalize
        # need not wait for.
        self._closed.set()

    def _asked(self) -> bool | None:
        try:
            answer = self._ready()
        except Exception:  # a probe that failed in an unforeseen way: not ready
            return False
        return None if answer is None else bool(answer)

    def _run(self) -> None:
        seen_ready, misses = False, 0
        while not self._closed.wait(self.interval_s):
            if self.engine.stopping:
                return  # stopped another way (the launcher's announcement, finalize)
            # Idle, nothing can hold a stop: no question asked (once it was ready).
            if seen_ready and not self.engine.busy:
                misses = 0
                continue
            answer = self._asked()
            if answer is None:
                continue  # no answer in time: neither a yes nor a no
            if answer:
                seen_ready, misses = True, 0
            elif seen_ready:
                misses += 1
                if misses >= 2:
                    self.engine.request_stop()
                    return
