"""`python -m frontend worker`: a Celery worker that runs batch jobs (design §4.4).

python -m frontend worker                  # what `make worker` runs; needs a broker:
                                           # INFERGATE_JOBS__BROKER_URL=redis://host:6379/1
python -m frontend worker --concurrency 4 --metrics-port 9101

A prefork pool: the main process takes tasks from the broker and hands each to a pool
process, which runs it on its own event loop with its own services (opened after the
fork, frontend/jobs/worker_services.py). SIGTERM is Celery's warm shutdown: running
chunks finish first. No FastAPI app is imported here.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

# Environment variables Celery's children read as the parent leaves them (nothing else).
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = commands.add_parser("worker", help="run a Celery worker for batch jobs")
    w.add_argument(
        "--concurrency", type=int, default=None, help="pool processes (jobs.worker_concurrency)"
    )
    w.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus port of the whole pool (jobs.worker_metrics_port; 0: off)",
    )
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    w.add_argument("--hostname", default=None, help="Celery node name (default jobs<pid>@<host>)")
    w.set_defaults(func=run)


def worker_argv(concurrency: int, queue: str, hostname: str, loglevel: str) -> list[str]:
    """Celery's command line: prefork, our queue only, and none of the cluster chatter
    (gossip, mingle, event heartbeats) that jobs do not use: SQL coordinates them."""
    return [
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "-Q",
        queue,
        "-n",
        hostname,
        f"--loglevel={loglevel.upper()}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def _metrics_dir(port: int) -> None:
    """The pool processes write their metrics into one directory that the main process
    serves. Set before anything imports prometheus_client (it reads the variable at
    import); kept when already set (`serve --job-workers`: the frontend's directory)."""
    if port > 0 and MULTIPROC_VARIABLE not in os.environ:
        os.environ[MULTIPROC_VARIABLE] = tempfile.mkdtemp(prefix="infergate-worker-metrics-")


def _serve_metrics(port: int) -> None:
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        raise SystemExit(f"cannot serve worker metrics on port {port}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    # Read before the settings module is imported: nothing may import prometheus_client
    # before the metrics directory is known.
    port_arg: int | None = args.metrics_port
    port = port_arg if port_arg is not None else _port_from_environment()
    _metrics_dir(port)

    from .db.cli import CommandError, load_settings, prepare_database
    from .jobs.worker_services import WorkerSetupError, check_worker_settings
    from .observability.logging import configure_logging

    try:
        settings = load_settings()
        # The frontend's database (outside prod without a URL: the embedded file that
        # `serve` uses, put in the environment), migrated once here (prod: checked at
        # head), before any pool process opens it. No loop or connection survives it.
        prepare_database(settings)
        settings = load_settings()
        check_worker_settings(settings)
    except (CommandError, WorkerSetupError) as exc:
        raise SystemExit(f"cannot start the job worker: {exc}") from None
    configure_logging(settings.log.level, settings.log.json_format)
    from .jobs.celery_app import make_celery

    concurrency = args.concurrency or settings.jobs.worker_concurrency
    if concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    hostname = args.hostname or f"jobs{os.getpid()}@%h"
    app = make_celery(settings)
    if port > 0:
        _serve_metrics(port)
    argv = worker_argv(concurrency, settings.jobs.queue, hostname, args.loglevel)
    return _exit_code(app.worker_main, argv)


def _port_from_environment() -> int:
    """jobs.worker_metrics_port without reading the settings (see `run`)."""
    raw = os.environ.get("INFERGATE_JOBS__WORKER_METRICS_PORT", "0")
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"INFERGATE_JOBS__WORKER_METRICS_PORT is not a port: {raw!r}") from None


def _exit_code(worker_main: Any, argv: list[str]) -> int:
    try:
        worker_main(argv)
    except SystemExit as exc:  # Celery's click command ends with sys.exit(code)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
