"""Schemas of the webhook and e-mail routes, and of a job's notification choices."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .common import Strict

EventType = Literal["job.succeeded", "job.failed", "job.cancelled", "job.progress"]
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL)
END_EVENTS: tuple[EventType, ...] = ("job.succeeded", "job.failed", "job.cancelled")
Url = Field(min_length=1, max_length=8192, examples=["https://hooks.example.com/infergate"])


class WebhookCreate(Strict):
    url: str = Url
    events: list[EventType] = Field(
        default_factory=lambda: list(END_EVENTS),
        min_length=1,
        max_length=8,
        description="job.progress is sent at most once a minute per job",
    )
    description: str | None = Field(None, max_length=256, pattern=PRINTABLE)
    enabled: bool = True


class WebhookUpdate(Strict):
    url: str | None = Field(None, min_length=1, max_length=8192)
    events: list[EventType] | None = Field(None, min_length=1, max_length=8)
    description: str | None = Field(None, max_length=256, pattern=PRINTABLE)
    enabled: bool | None = Field(None, description="true again: its failure count restarts")


class WebhookRotate(Strict):
    grace_s: float | None = Field(
        None,
        ge=0,
        le=30 * 86400,
        description="How long the old secret keeps signing beside the new one (default: "
        "notify.rotation_grace_s, a day); 0 ends it now",
    )


class Webhook(BaseModel):
    id: str
    object: Literal["webhook"] = "webhook"
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    created_at: float
    updated_at: float
    rotated_at: float | None
    previous_secret_valid_until: float | None = Field(
        description="While set and in the future, deliveries carry two signatures"
    )
    last_delivered_at: float | None
    last_failed_at: float | None


class WebhookWithSecret(Webhook):
    secret: str = Field(description="Shown once: keep it to verify deliveries")


class WebhookList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Webhook]
    next_cursor: str | None


class DeliveryAttempt(BaseModel):
    attempt: int
    at: float
    status: int | None = Field(description="The receiver's HTTP status; null: no answer")
    latency_ms: float
    error: str | None
    next_attempt_at: float | None


class Delivery(BaseModel):
    id: str
    object: Literal["webhook.delivery"] = "webhook.delivery"
    event_id: str = Field(description="The Webhook-Id header: the same on every attempt")
    event: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: float
    delivered_at: float | None
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    last_latency_ms: float | None
    log: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Delivery]
    next_cursor: str | None


class Redelivery(BaseModel):
    id: str = Field(description="The new delivery's id")
    object: Literal["webhook.delivery"] = "webhook.delivery"
    state: Literal["pending"] = "pending"


class JobNotify(Strict):
    """A job's own notifications of its end (job.succeeded, job.failed, job.cancelled)."""

    callback_url: str | None = Field(
        None,
        min_length=1,
        max_length=8192,
        description="POSTed each end event, signed with a secret shown once in the answer",
    )
    email: bool = Field(False, description="Mail the account's verified address at the end")


class JobNotifyShown(BaseModel):
    callback_url: str | None
    email: bool
    callback_secret: str | None = Field(
        None, description="In the submission's answer only: verifies the callback's deliveries"
    )


class JobNotification(BaseModel):
    event: str
    channel: Literal["webhook", "callback", "email"]
    webhook_id: str | None
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None


class EmailAddress(BaseModel):
    email: str | None = Field(description="Verified: job e-mails go here")
    notify_jobs: bool = Field(description="Your jobs mail their end unless they say otherwise")
    verified_at: float | None
    pending: str | None = Field(description="Waiting for its code")
    pending_expires_at: float | None


class EmailRequest(Strict):
    email: str = Field(
        min_length=3,
        max_length=320,
        # A plain address: letters, digits and . _ % + - before the @ (no quoting, no
        # control characters, no "=?" encoded words), an ASCII domain after it.
        pattern=r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}$",
        examples=["alice@example.com"],
    )


class EmailDefault(Strict):
    notify_jobs: bool = Field(
        description="Mail the end of every job of yours that does not set `notify`"
    )


class EmailVerify(Strict):
    code: str = Field(min_length=6, max_length=6, pattern=r"^[0-9]{6}$")
