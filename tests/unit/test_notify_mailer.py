"""Job e-mails (frontend/notify/mailer.py) sent through a real SMTP server (aiosmtpd, in a
thread on 127.0.0.1): what arrives, STARTTLS and implicit TLS with a private CA, and every
failure reduced to a MailError that says whether to retry and never names the recipient."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.message
import email.policy
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from frontend.notify.mailer import (
    Mailer,
    MailError,
    MailMessage,
    _format_duration,
    build_email,
    job_email,
    mask_address,
)
from frontend.notify_settings import MailSettings

HOST = "127.0.0.1"
TO = "alice.recipient@example.com"
SENDER = "Infergate Jobs <jobs@infergate.test>"
MESSAGE = MailMessage(
    to=TO,
    subject="infergate: job job_abc succeeded (intent)",
    text="plain body\n",
    html="<p>html body</p>\n",
)


# -- the test SMTP server -------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    starttls: bool  # aiosmtpd sets session.ssl after a STARTTLS upgrade only
    tls: bool  # the connection is encrypted, either way

    def message(self) -> email.message.EmailMessage:
        msg = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        return msg


@dataclass
class Collector:
    """aiosmtpd handler: keeps each message, or refuses every RCPT with `rcpt_reply`."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        if self.data_reply is not None:
            return self.data_reply
        self.received.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.content,
                starttls=session.ssl is not None,
                tls=server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
            )
        )
        return "250 OK: queued"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve() -> Iterator[Any]:
    controllers: list[Controller] = []

    def start(handler: Collector, **kwargs: Any) -> int:
        port = free_port()
        controller = Controller(handler, hostname=HOST, port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


@dataclass(frozen=True)
class PrivateCA:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_file))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    """A self-signed certificate for 127.0.0.1 (and localhost), the client's only trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "infergate test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return PrivateCA(cert_file, key_file)


def settings(port: int, **overrides: Any) -> MailSettings:
    values: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "security": "none",
        "sender": SENDER,
        "connect_timeout_s": 2.0,
        "timeout_s": 10.0,
    }
    values.update(overrides)
    return MailSettings(**values)


def send(mailer: Mailer, message: MailMessage = MESSAGE) -> None:
    asyncio.run(mailer.send(message))


def send_error(mailer: Mailer, message: MailMessage = MESSAGE) -> MailError:
    with pytest.raises(MailError) as info:
        send(mailer, message)
    error = info.value
    # The promise callers rely on, checked on every failure: the address is not in the text,
    # nor in a chained exception a logged traceback would print.
    assert TO not in str(error) and TO.lower() not in repr(error).lower()
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    return error


# -- sending --------------------------------------------------------------------------------


def test_a_message_arrives_with_both_parts(serve: Any) -> None:
    handler = Collector()
    port = serve(handler)
    send(Mailer(settings(port)))

    [got] = handler.received
    assert got.rcpt_tos == [TO]
    assert got.mail_from == "jobs@infergate.test"  # the envelope takes the bare address
    assert got.tls is False and got.starttls is False
    msg = got.message()
    assert msg["From"] == SENDER
    assert msg["To"] == TO
    assert msg["Subject"] == MESSAGE.subject
    assert msg["Date"] is not None
    assert str(msg["Message-ID"]).endswith("@infergate.test>")
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().strip() == "plain body"
    assert parts[1].get_content().strip() == "<p>html body</p>"


def test_a_recipient_refused_for_good_is_permanent_and_unnamed(serve: Any) -> None:
    handler = Collector(rcpt_reply=f"550 5.1.1 <{TO}>: no such user")
    port = serve(handler)
    error = send_error(Mailer(settings(port)))
    assert error.transient is False
    assert error.code == 550
    assert "no such user" in str(error)  # the server's reason survives, the address not
    assert mask_address(TO) in str(error)
    assert handler.received == []


def test_a_recipient_refused_for_now_is_transient(serve: Any) -> None:
    port = serve(Collector(rcpt_reply="450 4.2.0 mailbox busy, try later"))
    error = send_error(Mailer(settings(port)))
    assert error.transient is True
    assert error.code == 450


@pytest.mark.parametrize(
    ("reply", "transient"),
    [("554 5.7.1 message rejected as spam", False), ("451 4.3.0 try again later", True)],
)
def test_a_refused_message(serve: Any, reply: str, transient: bool) -> None:
    port = serve(Collector(data_reply=reply))
    error = send_error(Mailer(settings(port)))
    assert error.transient is transient
    assert error.code == int(reply[:3])


def test_a_closed_port_is_transient_and_quick() -> None:
    port = free_port()  # bound, then closed again: nothing listens there
    mailer = Mailer(settings(port, connect_timeout_s=1.0))
    started = time.monotonic()
    error = send_error(mailer)
    assert error.transient is True
    assert time.monotonic() - started < 1.0 + 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections and never says a word (no greeting), as a hung server does."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_silent_server_times_out_on_the_connect_timeout(silent_port: int) -> None:
    mailer = Mailer(settings(silent_port, connect_timeout_s=0.5, timeout_s=30))
    started = time.monotonic()
    error = send_error(mailer)
    assert error.transient is True
    assert "timed out" in str(error).lower()
    assert time.monotonic() - started < 0.5 + 1


def test_the_whole_send_is_bounded_by_timeout_s(silent_port: int) -> None:
    mailer = Mailer(settings(silent_port, connect_timeout_s=30, timeout_s=0.5))
    started = time.monotonic()
    error = send_error(mailer)
    assert error.transient is True
    assert time.monotonic() - started < 0.5 + 1


def test_starttls_with_a_private_ca(serve: Any, tls_files: PrivateCA) -> None:
    handler = Collector()
    port = serve(handler, tls_context=tls_files.server_context(), require_starttls=True)
    mailer = Mailer(settings(port, security="starttls"), tls_context=tls_files.client_context())
    send(mailer)
    [got] = handler.received
    assert got.starttls is True and got.tls is True
    assert got.rcpt_tos == [TO]


def test_starttls_refuses_an_untrusted_certificate(serve: Any, tls_files: PrivateCA) -> None:
    handler = Collector()
    port = serve(handler, tls_context=tls_files.server_context(), require_starttls=True)
    error = send_error(Mailer(settings(port, security="starttls")))  # system CAs only
    assert error.transient is True
    assert handler.received == []


def test_starttls_against_a_server_without_it_fails(serve: Any) -> None:
    handler = Collector()
    port = serve(handler)  # no tls_context: no STARTTLS offered
    error = send_error(Mailer(settings(port, security="starttls")))
    assert error.transient is True
    assert handler.received == []


def test_implicit_tls(serve: Any, tls_files: PrivateCA) -> None:
    handler = Collector()
    port = serve(handler, ssl_context=tls_files.server_context())
    send(Mailer(settings(port, security="tls"), tls_context=tls_files.client_context()))
    [got] = handler.received
    assert got.tls is True and got.starttls is False


def test_disabled_mailer() -> None:
    mailer = Mailer(MailSettings())
    assert mailer.enabled is False
    error = send_error(mailer)
    assert error.transient is False
    assert Mailer(settings(25)).enabled is True


def test_a_header_injection_is_refused_before_connecting() -> None:
    message = MailMessage(to=TO, subject="hi\r\nBcc: victim@example.org", text="t", html="h")
    error = send_error(Mailer(settings(free_port())), message)
    assert error.transient is False


# -- pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("alice@example.com", "a***@example.com"),
        ("a@example.com", "a***@example.com"),
        ("@example.com", "***@example.com"),
        ("odd@local@example.com", "o***@example.com"),
        ("no-at-sign", "***"),
        ("", "***"),
    ],
)
def test_mask_address(address: str, masked: str) -> None:
    assert mask_address(address) == masked


def test_build_email_message_id_uses_the_senders_domain() -> None:
    msg = build_email("plain@mail.example.org", MESSAGE)
    assert str(msg["Message-ID"]).endswith("@mail.example.org>")
    assert msg["From"] == "plain@mail.example.org"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


SUMMARY: dict[str, Any] = {
    "id": "job_abc",
    "state": "succeeded",
    "model": "intent",
    "version": "1",
    "rows_total": 100,
    "rows_done": 98,
    "rows_failed": 2,
    "created_at": 1_700_000_000.0,
    "started_at": 1_700_000_010.0,
    "finished_at": 1_700_000_075.0,
    "error": None,
}


def test_job_email_succeeded() -> None:
    mail = job_email(SUMMARY, to=TO, results_url="https://api.example.com/v1/jobs/job_abc")
    assert mail.to == TO
    assert mail.subject == "infergate: job job_abc succeeded (intent)"
    assert "intent (version 1)" in mail.text
    assert "98 done, 2 failed, 100 total" in mail.text
    assert "Duration: 1 min 5 s" in mail.text
    assert "Results: https://api.example.com/v1/jobs/job_abc" in mail.text
    assert "Error" not in mail.text
    assert '<a href="https://api.example.com/v1/jobs/job_abc">' in mail.html
    assert "98 done, 2 failed, 100 total" in mail.html


def test_job_email_failed_shows_the_error_and_no_link_without_a_url() -> None:
    summary = {
        **SUMMARY,
        "state": "failed",
        "error": {"code": "model_unavailable", "message": "the model is not loaded"},
    }
    mail = job_email(summary, to=TO, results_url=None)
    assert mail.subject == "infergate: job job_abc failed (intent)"
    assert "Error: model_unavailable: the model is not loaded" in mail.text
    assert "model_unavailable" in mail.html
    assert "Results" not in mail.text and "Results" not in mail.html


def test_job_email_cancelled_before_it_started_times_from_creation() -> None:
    summary = {**SUMMARY, "state": "cancelled", "started_at": None, "rows_done": 0}
    mail = job_email(summary, to=TO, results_url=None)
    assert "Duration: 1 min 15 s" in mail.text
    assert mail.subject == "infergate: job job_abc cancelled (intent)"


def test_job_email_escapes_html() -> None:
    summary = {
        **SUMMARY,
        "id": "job_<b>",
        "model": "<script>alert(1)</script>",
        "state": "failed",
        "error": {"code": "x", "message": 'a "quoted" <img src=x onerror=alert(1)>'},
    }
    mail = job_email(summary, to=TO, results_url='https://x.example/?a=1&b="><script>')
    assert "<script>" not in mail.html and "<img" not in mail.html and "<b>" not in mail.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert "&amp;b=&quot;&gt;&lt;script&gt;" in mail.html
    # The plain part is text: shown as is.
    assert "<script>alert(1)</script>" in mail.text


def test_job_email_does_not_link_a_non_web_url() -> None:
    mail = job_email(SUMMARY, to=TO, results_url="javascript:alert(1)")
    assert "href" not in mail.html
    assert "javascript:alert(1)" in mail.html


def test_job_email_subject_is_one_line() -> None:
    mail = job_email({**SUMMARY, "model": "a\r\nBcc: x@example.org"}, to=TO, results_url=None)
    assert "\n" not in mail.subject and "\r" not in mail.subject
    build_email(SENDER, mail)  # a header the e-mail library accepts


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (0.4, "0 s"),
        (5, "5 s"),
        (60, "1 min"),
        (65, "1 min 5 s"),
        (3600, "1 h"),
        (3725, "1 h 2 min"),
        (90_000, "1 d 1 h"),
        (-3, "0 s"),
    ],
)
def test_format_duration(seconds: float, shown: str) -> None:
    assert _format_duration(seconds) == shown
