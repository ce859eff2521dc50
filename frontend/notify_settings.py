"""Notification settings (INFERGATE_NOTIFY__*): the outbox dispatcher, webhook delivery
(timeouts, retries, SSRF policy) and e-mail over SMTP (INFERGATE_NOTIFY__MAIL__*).

Kept apart from settings.py, which nests them as `Settings.notify`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator


class MailSettings(BaseModel):
    """SMTP for job e-mails and address verification; no host: e-mail is off."""

    host: str | None = Field(None, max_length=255, description="SMTP server; unset: e-mail off")
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="starttls: upgrade after connecting (port 587); tls: implicit TLS (465); "
        "none: plain text, only for a relay on the same host",
    )
    username: str | None = Field(None, max_length=255)
    password: SecretStr | None = None
    sender: str = Field("infergate@localhost", max_length=255, description="the From address")
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    timeout_s: float = Field(30.0, gt=0, le=300, description="one message, start to end")

    @property
    def enabled(self) -> bool:
        return self.host is not None


class NotifySettings(BaseModel):
    """Job events (job.succeeded / failed / cancelled / progress) written to the outbox in
    the job's own transaction, and delivered at least once to webhooks and by e-mail."""

    dispatcher: Literal["on", "off"] = Field(
        "on",
        description="on: this process delivers the outbox (safe on every replica: SQL "
        "leases); off: `python -m frontend notifier` does",
    )
    poll_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="the outbox is read at least this often (and at once after a commit "
        "of this process that wrote an event)",
    )
    batch: int = Field(32, ge=1, le=1000, description="deliveries claimed per read")
    concurrency: int = Field(8, ge=1, le=256, description="deliveries in flight per process")
    lease_s: float = Field(
        60.0, gt=0, le=3600, description="a claimed delivery returns to others after this"
    )
    connect_timeout_s: float = Field(3.0, gt=0, le=60, description="one attempt's connect")
    timeout_s: float = Field(10.0, gt=0, le=120, description="one attempt, start to end")
    max_response_bytes: int = Field(
        4096, ge=0, le=1 << 20, description="of a receiver's answer, read and kept"
    )
    retry_base_s: float = Field(30.0, gt=0, le=3600, description="the first retry's ceiling")
    retry_max_s: float = Field(3600.0, gt=0, le=86400, description="a retry's largest ceiling")
    retry_window_s: float = Field(
        86400.0, gt=0, le=7 * 86400, description="retries end this long after the event"
    )
    disable_after: int = Field(
        20, ge=1, le=10_000, description="consecutive failed events that disable a webhook"
    )
    progress_interval_s: float = Field(
        60.0, ge=1, le=86400, description="at most one job.progress per job this often"
    )
    rotation_grace_s: float = Field(
        86400.0, ge=0, le=30 * 86400, description="both secrets sign after a rotation"
    )
    max_webhooks: int = Field(16, ge=1, le=1000, description="webhooks per owner")
    max_url_chars: int = Field(2048, ge=64, le=8192)
    # SSRF policy. Loopback is for tests and a receiver on the same host, never on by
    # default; https is required in prod unless said otherwise.
    allow_loopback: bool = Field(False, description="deliver to 127.0.0.0/8 and ::1")
    require_https: bool | None = Field(None, description="unset: required in prod only")
    resolve_timeout_s: float = Field(2.0, gt=0, le=30, description="one DNS lookup")
    hosts: dict[str, str] = Field(
        default_factory=dict,
        max_length=1000,
        description="name -> address, read before DNS (like /etc/hosts; split horizon, "
        "tests); the address is checked like any other",
    )
    public_url: str | None = Field(
        None, max_length=2048, description="this API's base URL, for links in e-mails"
    )
    # Readiness degrades (never fails) while the outbox backs up.
    backlog_degraded: int = Field(10_000, ge=1, le=10_000_000, description="due deliveries")
    oldest_degraded_s: float = Field(
        600.0, gt=0, le=7 * 86400, description="age of the oldest due one"
    )
    retention_s: float = Field(
        14 * 86400.0, gt=0, le=366 * 86400, description="ended deliveries kept this long"
    )
    mail: MailSettings = Field(default_factory=MailSettings)

    @model_validator(mode="after")
    def lease_outlasts_an_attempt(self) -> NotifySettings:
        # A lease shorter than one attempt would hand a delivery still being sent to
        # another dispatcher: a duplicate every time.
        longest = max(self.timeout_s, self.mail.timeout_s if self.mail.enabled else 0.0)
        if self.lease_s <= longest:
            raise ValueError(
                "notify.lease_s must be above notify.timeout_s (and notify.mail.timeout_s)"
            )
        return self

    @model_validator(mode="after")
    def window_holds_a_retry(self) -> NotifySettings:
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("notify.retry_max_s must be at least notify.retry_base_s")
        if self.timeout_s < self.connect_timeout_s:
            raise ValueError("notify.timeout_s must be at least notify.connect_timeout_s")
        return self
