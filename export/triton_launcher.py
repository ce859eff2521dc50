"""The embedded Triton: the real `tritonserver` 2.51 binary from the nvidia-pytriton wheel,
CPU-only, python backend. Starts it on chosen ports, waits for readiness, forwards its log,
stops it cleanly, and fails fast with a clear message (never a hang) when a port is taken
or a model fails to load.

Triton's own ports have no authentication: they listen on loopback only and must never be
exposed. Its admin-type APIs (model repository control, logging, tracing, shared memory,
statistics, model configuration) are restricted on HTTP and gRPC to callers that send the
header `infergate-triton-admin` (on gRPC `triton-grpc-protocol-infergate-triton-admin`:
Triton adds the prefix) with this launch's key: random per launch unless
INFERGATE_TRITON__ADMIN_KEY gives one (as `serve` does, so that the frontend knows it).
Health, metadata and inference stay open to whoever reaches the ports.

Stop: Triton finalizes a model only once every request of it has ended, so a generation
nobody cancelled would hold the stop for Triton's whole exit timeout (seen: 30 s, then
SIGKILL). So the launcher first creates the file named by INFERGATE_TRITON_STOP_FILE in
Triton's environment (the chat model then ends every sequence with a final error within
one decode step and refuses new ones), waits until Triton's metrics show no sequence left
(a few seconds at most), and only then sends SIGTERM: once Triton has begun to stop, a
backend stub's calls into it (a response, a cancellation check) can block until the
unload is over, which would be never.

    python -m export.triton_launcher --repository model_repository
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from procs.ports import distinct_free_ports, port_in_use
from procs.process import with_parent_death_signal
from procs.wait import http_ok

from .cache import cache_root

DEFAULT_HOST = "127.0.0.1"
# The frontend owns :8000, so Triton's own HTTP port moves to 8003; gRPC keeps 8001 and
# metrics 8002 (Triton's defaults).
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_HTTP_PORT = 8003


# The admin-type APIs behind the key; "health", "metadata" and "inference" stay open.
RESTRICTED_APIS = (
    "model-repository",
    "model-config",
    "shared-memory",
    "statistics",
    "trace",
    "logging",
)
# Lower case: gRPC metadata keys must be (HTTP headers compare without case).
ADMIN_HEADER = "infergate-triton-admin"
GRPC_ADMIN_HEADER = "triton-grpc-protocol-" + ADMIN_HEADER
ADMIN_KEY_ENV = "INFERGATE_TRITON__ADMIN_KEY"
STOP_FILE_ENV = "INFERGATE_TRITON_STOP_FILE"
HTTP_URL_ENV = "INFERGATE_TRITON_HTTP_URL"  # = export/runtime/server_watch.py's
# The chat model's gauges (export/runtime/chat_model.py): sequences not yet ended.
_SEQUENCE_GAUGES = ("infergate_chat_active_sequences{", "infergate_chat_queued_sequences{")


def launch_admin_key() -> str:
    """The key of this launch: the environment's (the caller shares it with the frontend)
    or a fresh random one. Never a constant."""
    return os.environ.get(ADMIN_KEY_ENV) or secrets.token_urlsafe(32)


class TritonLaunchError(RuntimeError):
    pass


@dataclass(frozen=True)
class TritonPorts:
    grpc: int = DEFAULT_GRPC_PORT
    http: int = DEFAULT_HTTP_PORT
    metrics: int = DEFAULT_METRICS_PORT

    @classmethod
    def free(cls, host: str = DEFAULT_HOST) -> TritonPorts:
        """Three different ports nothing listens on (tests and benchmarks: several
        Triton at once, none on the defaults)."""
        grpc, http, metrics = distinct_free_ports(3, host)
        return cls(grpc=grpc, http=http, metrics=metrics)


@dataclass(frozen=True)
class TritonInstall:
    root: Path  # .../site-packages/pytriton/tritonserver
    libs: Path  # .../site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def caches(self) -> Path:
        return self.root / "caches"


def find_install() -> TritonInstall:
    # find_spec locates the package without importing it (pytriton's import is heavy).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonLaunchError(
            "nvidia-pytriton is not installed; run `make install` (pip install -e '.[triton]')"
        )
    pkg = Path(next(iter(spec.submodule_search_locations)))
    install = TritonInstall(root=pkg / "tritonserver", libs=pkg.parent / "nvidia_pytriton.libs")
    if not install.binary.is_file():
        raise TritonLaunchError(f"tritonserver binary not found at {install.binary}")
    return install


def prepare_backends(install: TritonInstall, into: Path | None = None) -> Path:
    """A backend directory holding the python backend and the stub for *this* Python."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonLaunchError(f"no python backend stub for Python {version} in {stub.parent}")
    backends = into or cache_root() / "triton-backends" / f"py{version}"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    shipped = [p for p in sorted((install.root / "backends" / "python").iterdir()) if p.is_file()]
    for src in [*shipped, stub]:
        dst = python_dir / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            tmp = dst.with_suffix(".tmp")
            shutil.copy2(src, tmp)
            tmp.replace(dst)
    return backends


class EmbeddedTriton:
    """One tritonserver process. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        repository: Path,
        ports: TritonPorts | None = None,
        *,
        host: str = DEFAULT_HOST,
        log_sink: Callable[[str], None] | None = None,
        extra_args: tuple[str, ...] = (),
        strict: bool = True,
        admin_key: str | None = None,
    ) -> None:
        """strict: a model that fails to load stops the start (the default, and what tests
        and CI want). Not strict (`serve`): Triton serves the models that loaded, and
        `failed_models` says which did not and why (docs/reliability.md: one model broken).
        admin_key: the key of the restricted APIs (default: `launch_admin_key()`)."""
        self.repository = Path(repository).resolve()
        self.ports = ports or TritonPorts()
        self.host = host
        self.log_sink = log_sink
        self.extra_args = extra_args
        self.strict = strict
        self.admin_key = admin_key or launch_admin_key()
        self.failed_models: dict[str, str] = {}
        self.process: subprocess.Popen[str] | None = None
        self.log_tail: collections.deque[str] = collections.deque(maxlen=400)
        self._reader: threading.Thread | None = None
        # This launch's private directory (0700): it holds the stop announcement.
        self._run_dir: Path | None = None

    @property
    def admin_headers(self) -> dict[str, str]:
        """What a caller of a restricted HTTP API sends."""
        return {ADMIN_HEADER: self.admin_key}

    @property
    def grpc_admin_headers(self) -> dict[str, str]:
        """What a caller of a restricted gRPC protocol sends (Triton prefixes the name)."""
        return {GRPC_ADMIN_HEADER: self.admin_key}

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    def command(self, backends: Path, install: TritonInstall) -> list[str]:
        return [
            str(install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={install.caches}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--http-address={self.host}",
            f"--http-port={self.ports.http}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            # strict: a model that fails to load stops the start, loudly
            f"--strict-readiness={str(self.strict).lower()}",
            f"--exit-on-error={str(self.strict).lower()}",
            "--log-verbose=0",
            *self.restricted_api_args(),
            *self.extra_args,
        ]

    def restricted_api_args(self) -> list[str]:
        apis = ",".join(RESTRICTED_APIS)
        rule = f"{apis}:{ADMIN_HEADER}={self.admin_key}"
        return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]

    def environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(install.libs), env.get("LD_LIBRARY_PATH", "")) if p
        )
        # The python-backend stub ignores PYTHONPATH and the venv: model.py reads this and
        # adds the venv's site-packages so that it finds onnxruntime and tokenizers.
        paths = sysconfig.get_paths()
        site = [paths["purelib"], paths["platlib"]]
        env["INFERGATE_PYTHONPATH"] = os.pathsep.join(dict.fromkeys(site))
        env.setdefault("OMP_NUM_THREADS", "1")
        if self._run_dir is not None:
            env[STOP_FILE_ENV] = str(self.stop_file)
        # The chat model's readiness watch asks this endpoint (export/runtime/server_watch.py).
        env[HTTP_URL_ENV] = self.http_url
        return env

    @property
    def stop_file(self) -> Path:
        assert self._run_dir is not None, "not started"
        return self._run_dir / "stopping"

    def start(self, ready_timeout: float = 300.0) -> EmbeddedTriton:
        if not self.repository.is_dir():
            raise TritonLaunchError(
                f"model repository {self.repository} does not exist; run `make models`"
            )
        taken = [
            f"{name} port {port}"
            for name, port in (
                ("gRPC", self.ports.grpc),
                ("HTTP", self.ports.http),
                ("metrics", self.ports.metrics),
            )
            if port_in_use(self.host, port)
        ]
        if taken:
            raise TritonLaunchError(
                f"cannot start Triton: {', '.join(taken)} already in use on {self.host}; "
                "stop the other process or choose other ports (--grpc-port/--http-port/"
                "--metrics-port)"
            )
        install = find_install()
        backends = prepare_backends(install)
        self._run_dir = Path(tempfile.mkdtemp(prefix="infergate-triton-"))
        self.process = subprocess.Popen(
            with_parent_death_signal(self.command(backends, install)),
            env=self.environment(install),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            # Its own process group: the python-backend stubs are Triton's children and
            # outlive a SIGKILLed Triton (seen: ~1 GB each); the group reaches them too.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump_log, name="triton-log", daemon=True)
        self._reader.start()
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _pump_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.log_tail.append(line)
            if self.log_sink is not None:
                self.log_sink(line)

    def is_ready(self) -> bool:
        return http_ok(f"{self.http_url}/v2/health/ready", timeout_s=1)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                time.sleep(0.2)  # let the log reader drain the last lines
                raise TritonLaunchError(self._failure_message())
            if self.is_ready() and (self.strict or self._models_settled()):
                return
            time.sleep(0.25)
        raise TritonLaunchError(f"Triton was not ready after {timeout:.0f}s\n" + self._tail(30))

    def _models_settled(self) -> bool:
        """Not strict: every model has finished loading, one way or the other."""
        try:
            request = urllib.request.Request(
                f"{self.http_url}/v2/repository/index",
                data=b"{}",
                method="POST",
                headers=self.admin_headers,
            )
            with urllib.request.urlopen(request, timeout=2) as resp:
                index = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        if any(m.get("state") not in ("READY", "UNAVAILABLE") for m in index):
            return False
        self.failed_models = {
            m["name"]: m.get("reason", "") for m in index if m.get("state") == "UNAVAILABLE"
        }
        return True

    def _failure_message(self) -> str:
        code = self.process.returncode if self.process else None
        lines = list(self.log_tail)
        failed = [
            ln
            for ln in lines
            if "failed to load" in ln
            or "UNAVAILABLE" in ln
            or "already in use" in ln
            or ln.startswith("E")
        ]
        summary = "\n".join(failed[-10:]) or self._tail(30)
        return f"Triton exited with code {code} before it was ready:\n{summary}"

    def _tail(self, n: int) -> str:
        return "\n".join(list(self.log_tail)[-n:])

    def stop(self, timeout: float = 30.0, drain_timeout: float = 5.0) -> int | None:
        """Announce the stop and let generations end (see the module's docstring), then
        SIGTERM, wait (Triton needs ~3 s to unload), then SIGKILL."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            self._announce_stop()
            self._wait_sequences_ended(drain_timeout)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._kill_group()  # backend stubs that did not exit with Triton
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        return proc.returncode

    def _announce_stop(self) -> None:
        """Tell the models before Triton hears of it (see the module's docstring)."""
        if self._run_dir is not None:
            with contextlib.suppress(OSError):
                self.stop_file.touch()

    def sequences_in_flight(self) -> float:
        """Generation sequences not yet ended, by the chat model's gauges (0 without a
        chat model, or when the metrics cannot be read: nothing to wait for then)."""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=1) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if line.startswith(_SEQUENCE_GAUGES):
                with contextlib.suppress(ValueError):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def _wait_sequences_ended(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.sequences_in_flight() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL Triton and its backend stubs at once (a crash, as `kill -9` of its
        container would be); `stop()` afterwards only collects the exit status."""
        self._kill_group()
        if self.process is not None:
            self.process.wait(10)

    def _kill_group(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def __enter__(self) -> EmbeddedTriton:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.triton_launcher")
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT)
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument(
        "--allow-failed-models",
        action="store_true",
        help="serve the models that load; report the others instead of stopping",
    )
    args = parser.parse_args(argv)

    def sink(line: str) -> None:
        print(f"[triton] {line}", file=sys.stderr, flush=True)

    server = EmbeddedTriton(
        Path(args.repository),
        TritonPorts(grpc=args.grpc_port, http=args.http_port, metrics=args.metrics_port),
        host=args.host,
        log_sink=sink,
        strict=not args.allow_failed_models,
    )
    # A plain flag, polled: a signal handler that calls Event.set() can deadlock on the
    # Event's lock while the main thread is inside Event.wait() (seen: a launcher that
    # never stopped).
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start(args.ready_timeout)
    except TritonLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, reason in sorted(server.failed_models.items()):
        print(
            f"error: model {name!r} failed to load (its routes answer 503): {reason}",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"Triton ready: gRPC {server.grpc_url}  HTTP {server.http_url}  "
        f"metrics {server.metrics_url}",
        flush=True,
    )
    while not stop_requested and server.process and server.process.poll() is None:
        time.sleep(0.2)
    code = server.stop()
    print(f"Triton stopped (exit code {code})", file=sys.stderr)
    return 0 if stop_requested else (code or 1)


if __name__ == "__main__":
    sys.exit(main())
