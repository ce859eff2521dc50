"""The notification parts built in one place, from the settings: the secret box, the
resolver (the settings' static hosts, then DNS), the webhook client, the mailer, the
service the routes call and the outbox dispatcher. Used by the app's container and by
`python -m frontend notifier`."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from ..auth.secrets import derive
from ..db.database import Database
from ..observability.metrics import Metrics
from ..settings import Settings
from .dispatcher import Notifier
from .http_client import WebhookClient
from .mailer import Mailer
from .secret_box import SecretBox
from .service import NotificationsService
from .ssrf import Resolver, system_resolver


def static_hosts(hosts: Mapping[str, str], fallback: Resolver = system_resolver) -> Resolver:
    """A resolver that answers the names of `hosts` itself and asks `fallback` for the
    rest. Its answers are checked like DNS answers (ssrf.resolve_checked)."""
    table = {name.lower().rstrip("."): address for name, address in hosts.items()}
    if not table:
        return fallback

    async def resolve(host: str, port: int) -> list[str]:
        found = table.get(host.lower().rstrip("."))
        return [found] if found is not None else await fallback(host, port)

    return resolve


@dataclass
class NotifyParts:
    service: NotificationsService
    notifier: Notifier
    client: WebhookClient


def build_notify(
    settings: Settings,
    database: Database,
    metrics: Metrics,
    owner: str,
    *,
    resolver: Resolver | None = None,
    mail_tls: ssl.SSLContext | None = None,
) -> NotifyParts:
    s = settings.notify
    box = SecretBox(derive(settings.secret, "webhook-secrets"))
    resolve = resolver or static_hosts(s.hosts)
    client = WebhookClient.from_settings(s, environment=settings.environment, resolver=resolve)
    mailer = Mailer(s.mail, tls_context=mail_tls)
    service = NotificationsService(
        database,
        s,
        environment=settings.environment,
        box=box,
        mailer=mailer,
        resolver=resolve,
        code_key=derive(settings.secret, "email-codes"),
    )
    notifier = Notifier(
        database, s, client=client, mailer=mailer, box=box, metrics=metrics, owner=owner
    )
    return NotifyParts(service, notifier, client)
