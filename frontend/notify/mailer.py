"""Job e-mails over SMTP (aiosmtplib), and the one error type the outbox needs from them.

The outbox retries a delivery that failed transiently and gives up on one that failed
permanently, so every failure is reduced to `MailError.transient`. A recipient address is
personal data: it never appears in a MailError's text (which ends up in logs and in the
delivery's stored last error); `mask_address` is the form that may.
"""

from __future__ import annotations

import asyncio
import email.message
import email.utils
import html
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosmtplib

from frontend.notify_settings import MailSettings

# Anything that looks like an address inside a server's reply text, which often echoes the
# recipient ("550 5.1.1 <alice@example.com>: user unknown").
_ADDRESS_LIKE = re.compile(r"[^\s<>()\[\]\"',;:]*@[^\s<>()\[\]\"',;:]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_REPLY_CHARS = 200  # of a server's reply, kept in the error


@dataclass(frozen=True)
class MailMessage:
    to: str
    subject: str
    text: str
    html: str


class MailError(Exception):
    """One message not sent. `transient`: worth retrying (no connection, a timeout, a 4xx
    reply, a server or configuration problem that an operator can fix); False: the server
    refused this recipient or this message for good (5xx), so retrying cannot help.
    `code` is the SMTP reply code when there was one. The text never holds the address."""

    def __init__(self, message: str, *, transient: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code


def mask_address(address: str) -> str:
    """`alice@example.com` -> `a***@example.com`: enough to tell deliveries apart in logs,
    not enough to recover the mailbox. No "@": `***`."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def build_email(sender: str, message: MailMessage) -> email.message.EmailMessage:
    """multipart/alternative, text/plain first then text/html (clients show the last part
    they understand). Raises ValueError on a header value with a line break."""
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = message.to
    msg["Subject"] = message.subject
    msg["Date"] = email.utils.format_datetime(datetime.now(UTC))
    # With no domain, make_msgid asks socket.getfqdn(), which can block on DNS.
    msg["Message-ID"] = email.utils.make_msgid(domain=_domain(sender) or "localhost")
    msg.set_content(message.text, subtype="plain")
    msg.add_alternative(message.html, subtype="html")
    return msg


class Mailer:
    """Sends MailMessages through the configured SMTP server, one connection per message
    (job e-mails are rare; a pooled connection would only add idle-timeout failures)."""

    def __init__(
        self, settings: MailSettings, *, tls_context: ssl.SSLContext | None = None
    ) -> None:
        """`tls_context`: the client TLS context, for a server whose certificate a private CA
        signed (None: aiosmtplib's default, which verifies against the system's CAs)."""
        self._settings = settings
        self._tls_context = tls_context

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    async def send(self, message: MailMessage) -> None:
        s = self._settings
        if s.host is None:
            raise MailError("e-mail is not configured (notify.mail.host is unset)", transient=False)
        try:
            msg = build_email(s.sender, message)
        except ValueError:
            raise MailError(
                "the message could not be built (a header with a line break)", transient=False
            ) from None
        envelope_from = email.utils.parseaddr(s.sender)[1] or s.sender
        try:
            async with asyncio.timeout(s.timeout_s):
                await aiosmtplib.send(
                    msg,
                    sender=envelope_from,
                    recipients=[message.to],
                    hostname=s.host,
                    port=s.port,
                    use_tls=s.security == "tls",
                    start_tls=s.security == "starttls",
                    tls_context=self._tls_context,
                    username=s.username,
                    password=s.password.get_secret_value() if s.password is not None else None,
                    timeout=s.connect_timeout_s,
                )
        # `from None` throughout: the original exception's text (and so a traceback that
        # chains it) may hold the address, which is exactly what a MailError promises not to.
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            reply = exc.recipients[0].message if exc.recipients else ""
            raise _refused("the recipient was refused", codes, reply, message.to) from None
        except aiosmtplib.SMTPRecipientRefused as exc:
            raise _refused(
                "the recipient was refused", [exc.code], exc.message, message.to
            ) from None
        except aiosmtplib.SMTPDataError as exc:
            raise _refused("the message was refused", [exc.code], exc.message, message.to) from None
        except aiosmtplib.SMTPNotSupported:
            # SMTPUTF8 missing for a non-ASCII address: this server will never take it.
            raise MailError(
                "the server cannot take this message (SMTPUTF8 not supported)", transient=False
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            # Greeting, HELO, AUTH, MAIL FROM, STARTTLS: the server or our configuration,
            # not this message. Transient even on 5xx, so that a misconfigured relay delays
            # the e-mails until an operator fixes it instead of dropping them all.
            raise MailError(
                f"the SMTP server refused ({type(exc).__name__}): {exc.code} "
                f"{_scrub(exc.message, message.to)}",
                transient=True,
                code=exc.code,
            ) from None
        except (TimeoutError, aiosmtplib.SMTPTimeoutError):
            raise MailError(
                f"timed out sending to the SMTP server {s.host}:{s.port}", transient=True
            ) from None
        except aiosmtplib.SMTPException as exc:  # connect errors, disconnects, no STARTTLS
            raise MailError(
                f"SMTP failed ({type(exc).__name__}): {_scrub(str(exc), message.to)}",
                transient=True,
            ) from None
        except ssl.SSLError as exc:
            # Before ValueError: a failed certificate check is both. Our configuration (or
            # someone in the middle), not the message: retried until an operator fixes it.
            raise MailError(
                f"TLS with the SMTP server failed ({type(exc).__name__})", transient=True
            ) from None
        except ValueError:
            # aiosmtplib's "an address that can't be safely sent".
            raise MailError("the recipient address cannot be sent", transient=False) from None
        except OSError as exc:  # anything aiosmtplib did not wrap (TLS set-up, sockets)
            raise MailError(
                f"SMTP connection failed ({type(exc).__name__})", transient=True
            ) from None


def job_email(summary: Mapping[str, Any], *, to: str, results_url: str | None) -> MailMessage:
    """The e-mail for a finished job (succeeded, failed or cancelled): what ran, how many
    rows, how long, why it failed, and where the results are."""
    job_id = str(summary.get("id", "?"))
    state = str(summary.get("state", "?"))
    model = str(summary.get("model", "?"))
    version = summary.get("version")
    model_line = model if version is None else f"{model} (version {version})"
    rows = (
        f"{summary.get('rows_done', 0)} done, {summary.get('rows_failed', 0)} failed, "
        f"{summary.get('rows_total', 0)} total"
    )
    duration = _duration(summary)
    error = summary.get("error") if state == "failed" else None
    error_line = None
    if isinstance(error, Mapping):
        code, text = error.get("code"), error.get("message")
        error_line = ": ".join(str(part) for part in (code, text) if part)
    elif error:
        error_line = str(error)

    facts: list[tuple[str, str]] = [("Model", model_line), ("Rows", rows)]
    if duration is not None:
        facts.append(("Duration", duration))
    if error_line:
        facts.append(("Error", error_line))

    text_lines = [f"Job {job_id} {state}.", ""]
    text_lines += [f"{label}: {value}" for label, value in facts]
    if results_url:
        text_lines.append(f"Results: {results_url}")

    e = html.escape
    table_rows = [
        f'<tr><th align="left">{e(label)}</th><td>{e(value)}</td></tr>' for label, value in facts
    ]
    if results_url:
        # Only a web link becomes clickable; anything else is shown, escaped, as text.
        link = (
            f'<a href="{e(results_url)}">{e(results_url)}</a>'
            if results_url.lower().startswith(("https://", "http://"))
            else e(results_url)
        )
        table_rows.append(f'<tr><th align="left">Results</th><td>{link}</td></tr>')
    html_body = (
        "<!DOCTYPE html>\n<html><body>\n"
        f"<p>Job <code>{e(job_id)}</code> {e(state)}.</p>\n"
        "<table>\n" + "\n".join(table_rows) + "\n</table>\n</body></html>\n"
    )
    return MailMessage(
        to=to,
        # One line: a job id or model name with a line break must not reach the header.
        subject=_one_line(f"infergate: job {job_id} {state} ({model})"),
        text="\n".join(text_lines) + "\n",
        html=html_body,
    )


def _refused(what: str, codes: list[int], reply: str, address: str) -> MailError:
    # Permanent only when every refusal is 5xx: a 4xx (greylisting, a full mailbox) passes.
    permanent = bool(codes) and all(code >= 500 for code in codes)
    code = codes[0] if codes else None
    return MailError(f"{what}: {code} {_scrub(reply, address)}", transient=not permanent, code=code)


def _scrub(text: str, address: str) -> str:
    """A server's text fit for a log line: no address (masked), no control characters,
    bounded in length."""
    if address:
        text = re.sub(re.escape(address), mask_address(address), text, flags=re.IGNORECASE)
    text = _ADDRESS_LIKE.sub(lambda m: mask_address(m.group(0)), text)
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= _REPLY_CHARS else text[: _REPLY_CHARS - 1] + "…"


def _domain(address: str) -> str:
    return email.utils.parseaddr(address)[1].rpartition("@")[2]


def _one_line(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def _duration(summary: Mapping[str, Any]) -> str | None:
    finished = summary.get("finished_at")
    started = summary.get("started_at")
    if started is None:  # cancelled before it started: time since it was submitted
        started = summary.get("created_at")
    if not isinstance(finished, int | float) or not isinstance(started, int | float):
        return None
    return _format_duration(finished - started)


def _format_duration(seconds: float) -> str:
    """`5 s`, `1 min 5 s`, `2 h 3 min`, `1 d 4 h`: the two largest units, zeros left out."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    for i, (value, _) in enumerate(units[:-1]):
        if value:
            return " ".join(f"{v} {unit}" for v, unit in units[i : i + 2] if v)
    return f"{secs} s"
