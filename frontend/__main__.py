"""Run the stack: embedded Triton (unless --triton-url) + the frontend under uvicorn.

python -m frontend serve                      # what `make serve` runs
python -m frontend serve --workers 4          # several workers: needs INFERGATE_REDIS__URL
                                              # (keys, revocations and limits are shared)
python -m frontend serve --triton-url host:8001
python -m frontend serve --job-workers 2        # + 2 Celery job workers (needs a broker:
                                              # INFERGATE_JOBS__BROKER_URL)
python -m frontend worker [--concurrency N]   # a Celery job worker (frontend/worker.py)
python -m frontend notifier                   # the notification outbox's dispatcher alone
python -m frontend db upgrade|downgrade <rev>|current|import-redis   # frontend/db/cli.py
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procs.process import start_python, with_parent_death_signal
from procs.process import stop as stop_process

EXAMPLES = """
infergate is up at http://{host}:{port}  (docs: http://{host}:{port}/docs)
{key_hint}
  curl -s http://{host}:{port}/v1/models -H "X-API-Key: $IG_ADMIN_KEY"
  curl -s http://{host}:{port}/v1/models/intent/predict -H "X-API-Key: $IG_ADMIN_KEY" \\
       -H 'Content-Type: application/json' \\
       -d '{{"inputs": ["I want to talk to a human"], "top_k": 3}}'
  curl -s http://{host}:{port}/v1/models/intent/versions/2/predict -H "X-API-Key: $IG_ADMIN_KEY" \\
       -H 'Content-Type: application/json' -d '{{"inputs": "what is my balance"}}'
  curl -s http://{host}:{port}/v1/models/sentiment/predict -H "X-API-Key: $IG_ADMIN_KEY" \\
       -H 'Content-Type: application/json' -d '{{"inputs": ["What a wonderful film!", "Dull."]}}'
  curl -s http://{host}:{port}/v1/embeddings -H "X-API-Key: $IG_ADMIN_KEY" \\
       -H 'Content-Type: application/json' -d '{{"model": "embed", "input": "hello world"}}'
  curl -s http://{host}:{port}/v1/usage -H "X-API-Key: $IG_ADMIN_KEY"
  curl -s http://{host}:{port}/health/ready
"""

KEY_FILE = ".infergate/admin.key"
SECRET_FILE = ".infergate/secret.key"


def _kept_secret(name: str, make: Callable[[], str]) -> str:
    """A value made once and kept in a private file (mode 0600 in a 0700 directory,
    git-ignored) so that it survives restarts."""
    path = Path(name)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _dev_admin_key() -> str:
    """Outside prod, with no bootstrap admin key configured, `serve` makes one."""
    return _kept_secret(KEY_FILE, lambda: "ig_admin_" + secrets.token_urlsafe(32))


def _dev_secret() -> str:
    """Outside prod, with no INFERGATE_SECRET_KEY, `serve` makes a random one: every
    signing and hashing key derives from it, so it must never be a published constant."""
    return _kept_secret(SECRET_FILE, lambda: secrets.token_urlsafe(48))


def _prepare_auth(workers: int) -> str:
    """Check the settings before anything starts; returns the line that tells where the
    admin key is."""
    from .settings import Settings

    if (
        "INFERGATE_SECRET_KEY" not in os.environ
        and os.environ.get("INFERGATE_ENVIRONMENT", "dev") != "prod"
    ):
        # Before the settings are read: the workers inherit it through the environment.
        os.environ["INFERGATE_SECRET_KEY"] = _dev_secret()
    try:
        settings = Settings()
    except ValueError as exc:
        from .db.cli import settings_error

        raise SystemExit(f"invalid settings: {settings_error(exc)}") from None
    warning = settings.secret_warning()
    if warning is not None:
        print(f"\n  WARNING: {warning}\n", file=sys.stderr, flush=True)
    if not settings.auth.enabled:
        return "\n  authentication is OFF (INFERGATE_AUTH__ENABLED=false)\n"
    if workers > 1 and settings.redis.url is None:
        raise SystemExit(
            "--workers > 1 needs INFERGATE_REDIS__URL: keys, revocations and rate limits "
            "must be shared by the workers"
        )
    if settings.auth.bootstrap_admin_key is not None:
        return "\n  export IG_ADMIN_KEY=<your INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY>\n"
    if settings.environment == "prod":
        return "\n  no bootstrap admin key: set INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY\n"
    os.environ["INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY"] = _dev_admin_key()
    return f"\n  export IG_ADMIN_KEY=$(cat {os.path.abspath(KEY_FILE)})\n"


def _prepare_database() -> None:
    """Before Triton and the workers start: the database every worker will open (outside
    prod without INFERGATE_DATABASE__URL, the embedded `.infergate/infergate.db`, put in
    the environment for the workers), migrated to head once, here; prod never migrates:
    a database not at head refuses the start, naming `python -m frontend db upgrade`."""
    from .db.cli import CommandError, load_settings, prepare_database

    try:
        prepare_database(load_settings())
    except CommandError as exc:
        raise SystemExit(f"cannot start: {exc}") from None


def _start_triton(args: argparse.Namespace) -> subprocess.Popen[str]:
    """The launcher runs as its own process: export and frontend share no imports."""
    # Triton's admin APIs (repository control, logging, ...) want a key: a random one per
    # launch unless one is configured, given to the launcher (a child) and to the
    # frontend's workers (settings.triton.admin_key) through the environment.
    os.environ.setdefault("INFERGATE_TRITON__ADMIN_KEY", secrets.token_urlsafe(32))
    cmd = [
        sys.executable,
        "-m",
        "export.triton_launcher",
        "--repository",
        args.repository,
        "--grpc-port",
        str(args.triton_grpc_port),
        "--http-port",
        str(args.triton_http_port),
        "--metrics-port",
        str(args.triton_metrics_port),
        # One broken model must not take the others down (docs/reliability.md: one model broken).
        "--allow-failed-models",
    ]
    # With the parent-death signal: uvicorn re-raises SIGTERM after its graceful shutdown,
    # so this process may end before any `finally` runs; the kernel then sends the launcher
    # SIGTERM and it stops Triton.
    proc = subprocess.Popen(with_parent_death_signal(cmd), stdout=subprocess.PIPE, text=True)
    ready = threading.Event()

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("Triton ready"):
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    while not ready.wait(0.5):
        if proc.poll() is not None:
            raise SystemExit(f"embedded Triton failed to start (exit code {proc.returncode})")
    return proc


def _server_options() -> dict[str, Any]:
    """uvicorn with the slow-client and size limits of INFERGATE_SERVER__* (issue 11)."""
    from .server import uvicorn_options
    from .settings import Settings

    return uvicorn_options(Settings().server)


def _check_job_workers(count: int) -> None:
    if count < 0:
        raise SystemExit("--job-workers must be 0 or more")
    if count == 0:
        return
    from .settings import Settings

    if Settings().jobs.broker_url is None:
        raise SystemExit("--job-workers needs INFERGATE_JOBS__BROKER_URL (their broker)")


def _start_job_workers(count: int) -> list[subprocess.Popen[bytes]]:
    """`count` Celery job workers beside the frontend, with the environment `serve` has
    prepared (database URL, Triton URL, repository, metrics directory); each gets the
    parent-death signal, so none outlives this process."""
    return [
        start_python(["-m", "frontend", "worker"], stdout=sys.stdout, stderr=sys.stderr)
        for _ in range(count)
    ]


def _stop_job_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (Celery's warm shutdown: running chunks finish), then SIGKILL after 30 s:
    a chunk cut there comes back when its lease ends."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        stop_process(worker, timeout_s=30)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    key_hint = _prepare_auth(args.workers)
    _check_job_workers(args.job_workers)
    _prepare_database()
    triton = None
    if args.triton_url:
        os.environ["INFERGATE_TRITON__URL"] = args.triton_url
    else:
        triton = _start_triton(args)
        os.environ["INFERGATE_TRITON__URL"] = f"127.0.0.1:{args.triton_grpc_port}"
    os.environ["INFERGATE_TRITON__MODEL_REPOSITORY"] = args.repository
    several = args.workers > 1 or args.job_workers > 0
    if several and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Must be set before any worker imports prometheus_client; the job workers write
        # into it too, so the frontend's /metrics shows their counts.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="infergate-metrics-")
    print(EXAMPLES.format(host=args.host, port=args.port, key_hint=key_hint), flush=True)
    _sigterm_like_sigint()
    job_workers: list[subprocess.Popen[bytes]] = []
    try:
        job_workers = _start_job_workers(args.job_workers)
        uvicorn.run(
            "frontend.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=30,
            **_server_options(),
        )
    finally:
        _stop_job_workers(job_workers)
        if triton is not None:
            _stop_triton(triton)
    return 0


def _sigterm_like_sigint() -> None:
    """uvicorn re-raises the stop signal once it has shut down. SIGTERM's default action
    would then end this process at once (exit -15), before the `finally` stops Triton
    (left to the parent-death signal, after this process is gone). Raised as
    KeyboardInterrupt, as SIGINT is, uvicorn.run returns and `serve` ends with 0 once
    Triton has stopped."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _stop_triton(launcher: subprocess.Popen[str]) -> None:
    """SIGTERM the launcher, which stops Triton and its backend stubs (a few seconds: the
    chat model ends its generations at once); SIGKILL if it hangs (Triton then gets its
    parent-death signal)."""
    stop_process(launcher, timeout_s=45)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frontend")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run embedded Triton + the frontend")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--repository", default="model_repository")
    s.add_argument("--triton-url", help="use a running Triton instead of the embedded one")
    s.add_argument("--triton-grpc-port", type=int, default=8001)
    s.add_argument("--triton-http-port", type=int, default=8003)
    s.add_argument("--triton-metrics-port", type=int, default=8002)
    s.add_argument(
        "--job-workers", type=int, default=0, help="Celery job workers to run beside (0: none)"
    )
    s.set_defaults(func=serve)
    from .db.cli import add_parser as add_db_parser
    from .notifier import add_parser as add_notifier_parser
    from .worker import add_parser as add_worker_parser

    add_db_parser(sub)
    add_worker_parser(sub)
    add_notifier_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
