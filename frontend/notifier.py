"""`python -m frontend notifier`: the notification outbox's dispatcher on its own, for
deployments whose frontends run with INFERGATE_NOTIFY__DISPATCHER=off (or beside them:
any number may run, each delivery is leased in SQL to one of them).

python -m frontend notifier [--metrics-port 9102]

It needs only the database (the same INFERGATE_DATABASE__URL and INFERGATE_SECRET_KEY
as the frontends: the webhook secrets are sealed under a key derived from it). SIGTERM
or SIGINT stops it after the database call in progress; a delivery cut off then is sent
again when its lease ends (same Webhook-Id). No FastAPI app is imported here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    n = commands.add_parser("notifier", help="deliver the notification outbox (webhooks, e-mail)")
    n.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (0: off)")
    n.set_defaults(func=run)


async def _main(metrics_port: int) -> None:
    from .db.startup import open_database
    from .jobs.context import worker_id
    from .notify.build import build_notify
    from .observability.logging import configure_logging
    from .observability.metrics import Metrics
    from .settings import Settings

    settings = Settings()
    configure_logging(settings.log.level, settings.log.json_format)
    log = logging.getLogger("infergate.notify")
    if settings.secret_generated:
        raise SystemExit("notifier: INFERGATE_SECRET_KEY must be set (the frontends' secret)")
    metrics = Metrics()
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=metrics.registry)
    database = await open_database(settings, metrics)
    notify = build_notify(settings, database, metrics, f"notifier:{worker_id()}")
    database.on_commit(notify.notifier.wake)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("notifier started", extra={"owner": notify.notifier.owner})
    task = asyncio.create_task(notify.notifier.run())
    try:
        await stop.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await notify.client.aclose()
        await database.close()
        log.info("notifier stopped")


def run(args: argparse.Namespace) -> int:
    asyncio.run(_main(args.metrics_port))
    return 0
