"""The e-mails other than a job's end (mailer.job_email): the address-verification code
and the notice that a webhook was disabled. Every value interpolated into HTML is
escaped."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .mailer import MailMessage


def verification_email(code: str, *, to: str, ttl_s: float) -> MailMessage:
    minutes = int(ttl_s // 60)
    text = (
        f"Your infergate verification code is {code}.\n\n"
        f"It is valid for {minutes} minutes. Send it with POST /v1/me/email/verify to "
        "receive job notifications at this address. If you did not ask for it, ignore "
        "this message.\n"
    )
    body = (
        f"<p>Your infergate verification code is <strong>{html.escape(code)}</strong>.</p>"
        f"<p>It is valid for {minutes} minutes. Send it with <code>POST /v1/me/email/verify"
        "</code> to receive job notifications at this address. If you did not ask for it, "
        "ignore this message.</p>"
    )
    return MailMessage(to=to, subject="infergate: your verification code", text=text, html=body)


def disabled_email(data: Mapping[str, Any], *, to: str) -> MailMessage:
    webhook = data.get("webhook") or {}
    hook_id, url = str(webhook.get("id", "")), str(webhook.get("url", ""))
    reason = str(data.get("reason", ""))
    text = (
        f"Your webhook {hook_id} ({url}) was disabled: {reason}.\n\n"
        "Its delivery log (GET /v1/webhooks/{id}/deliveries) shows each attempt. Enable it "
        'again with PATCH /v1/webhooks/{id} {"enabled": true}; failed deliveries can be '
        "sent again with POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver.\n"
    )
    body = (
        f"<p>Your webhook <code>{html.escape(hook_id)}</code> ({html.escape(url)}) was "
        f"disabled: {html.escape(reason)}.</p><p>Its delivery log "
        "(<code>GET /v1/webhooks/{id}/deliveries</code>) shows each attempt. Enable it again "
        "with <code>PATCH /v1/webhooks/{id}</code>; failed deliveries can be sent again with "
        "<code>POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver</code>.</p>"
    )
    return MailMessage(
        to=to, subject=f"infergate: webhook {hook_id} was disabled", text=text, html=body
    )
