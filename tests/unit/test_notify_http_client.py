"""The webhook HTTP client (frontend/notify/http_client.py) against real local servers:
delivery, failures, timeouts, a capped body, no redirects, and the SSRF pin (the checked
address is the one connected to, with the URL's name in Host and TLS)."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from frontend.notify.http_client import DeliveryResult, WebhookClient
from frontend.notify.ssrf import Resolver
from frontend.notify_settings import NotifySettings

BODY = b'{"type": "job.succeeded", "job_id": "j1"}'


@dataclass
class Seen:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes


Respond = Callable[[Seen, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """A tiny HTTP/1.1 server on 127.0.0.1 that records what reached it."""

    respond: Respond
    port: int = 0
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            seen = await read_request(reader)
            self.requests.append(seen)
            await self.respond(seen, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> Seen:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *lines = head.split("\r\n")[:-2]
    method, target, _ = request_line.split(" ")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Seen(method, target, headers, body)


def reply(status: int, body: bytes = b"", *extra: str) -> Respond:
    async def respond(
        seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}", *extra]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return respond


async def never_answer(
    seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await reader.read()  # until the client gives up and closes


@asynccontextmanager
async def serving(
    respond: Respond, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    server = Server(respond)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl_context)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def answering(answers: dict[str, str]) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return [answers[host]]

    return resolve


def client(
    *,
    resolver: Resolver | None = None,
    allow_loopback: bool = True,
    timeout_s: float = 2.0,
    max_response_bytes: int = 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> WebhookClient:
    return WebhookClient(
        resolver=resolver or answering({}),
        allow_loopback=allow_loopback,
        require_https=False,
        connect_timeout_s=min(1.0, timeout_s),
        timeout_s=timeout_s,
        max_response_bytes=max_response_bytes,
        ssl_context=ssl_context,
    )


def test_a_2xx_is_delivered_with_the_request_intact() -> None:
    async def run() -> tuple[DeliveryResult, Server]:
        async with serving(reply(200, b'{"ok": true}')) as server:
            headers = {"Webhook-Id": "evt_1", "Webhook-Signature": "t=1,v1=ab"}
            result = await client().post(
                f"http://127.0.0.1:{server.port}/hooks/in?x=1", BODY, headers
            )
            return result, server

    result, server = asyncio.run(run())
    assert result.delivered and result.error is None and not result.refused
    assert result.status == 200
    assert result.address == "127.0.0.1"
    assert result.response_excerpt == '{"ok": true}'
    assert 0 < result.latency_ms < 2000
    [seen] = server.requests
    assert (seen.method, seen.target, seen.body) == ("POST", "/hooks/in?x=1", BODY)
    assert seen.headers["host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["webhook-id"] == "evt_1"
    assert seen.headers["webhook-signature"] == "t=1,v1=ab"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-length"] == str(len(BODY))
    assert seen.headers["user-agent"] == "infergate-webhooks/1"


def test_the_caller_may_set_content_type_but_not_host_or_framing() -> None:
    async def run() -> tuple[Seen, int]:
        async with serving(reply(204)) as server:
            headers = {
                "content-type": "application/cloudevents+json",
                "Host": "evil.example",
                "Content-Length": "1",
                "Transfer-Encoding": "chunked",
            }
            result = await client().post(f"http://127.0.0.1:{server.port}/", BODY, headers)
            assert result.delivered
            return server.requests[0], server.port

    seen, port = asyncio.run(run())
    assert seen.headers["content-type"] == "application/cloudevents+json"
    assert seen.headers["host"] == f"127.0.0.1:{port}"
    assert seen.headers["content-length"] == str(len(BODY))
    assert "transfer-encoding" not in seen.headers
    assert seen.body == BODY


def test_a_header_http_cannot_carry_is_a_callers_bug() -> None:
    with pytest.raises(ValueError, match="X-Bad"):
        asyncio.run(client().post("http://127.0.0.1:9/", BODY, {"X-Bad": "a\r\nX-Injected: 1"}))


def test_a_5xx_is_a_failure_with_its_status() -> None:
    async def run() -> DeliveryResult:
        async with serving(reply(500, b"boom")) as server:
            return await client().post(f"http://127.0.0.1:{server.port}/", BODY, {})

    result = asyncio.run(run())
    assert not result.delivered
    assert (result.status, result.error, result.response_excerpt) == (500, "HTTP 500", "boom")


def test_a_redirect_is_not_followed() -> None:
    async def run() -> tuple[DeliveryResult, Server]:
        async with serving(reply(200)) as landing:
            location = f"Location: http://127.0.0.1:{landing.port}/landed"
            async with serving(reply(302, b"", location)) as server:
                result = await client().post(f"http://127.0.0.1:{server.port}/", BODY, {})
                return result, landing

    result, landing = asyncio.run(run())
    assert (result.status, result.error) == (302, "redirect not followed (HTTP 302)")
    assert not result.delivered
    assert landing.connections == 0


def test_a_server_that_never_answers_times_out_within_the_deadline() -> None:
    async def run() -> DeliveryResult:
        async with serving(never_answer) as server:
            return await client(timeout_s=0.5).post(f"http://127.0.0.1:{server.port}/", BODY, {})

    started = time.perf_counter()
    result = asyncio.run(run())
    assert time.perf_counter() - started < 0.5 + 1.0
    assert result.status is None and not result.delivered and not result.refused
    assert result.error is not None and "timed out" in result.error
    assert result.address == "127.0.0.1"


def test_a_huge_body_is_read_only_up_to_the_cap() -> None:
    declared = 10 * 1024 * 1024

    async def run() -> DeliveryResult:
        hung_up = asyncio.Event()

        async def stalls_after_a_little(
            seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            # 10 MB announced, 256 KiB sent, then nothing until the client hangs up: a
            # client that read the whole body would wait here until its deadline.
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\n".encode())
            writer.write(b"x" * (256 * 1024))
            await writer.drain()
            try:
                await reader.read()
            finally:  # EOF, or a reset: the client closed with our bytes unread
                hung_up.set()

        async with serving(stalls_after_a_little) as server:
            result = await client(timeout_s=5.0, max_response_bytes=100).post(
                f"http://127.0.0.1:{server.port}/", BODY, {}
            )
            await asyncio.wait_for(hung_up.wait(), 1.0)  # the client closed, mid-body
            return result

    started = time.perf_counter()
    result = asyncio.run(run())
    assert time.perf_counter() - started < 1.5
    assert result.delivered
    assert result.response_excerpt == "x" * 100


def test_a_connect_failure_is_reported() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = asyncio.run(client().post(f"http://127.0.0.1:{port}/", BODY, {}))
    assert result.status is None and not result.refused
    assert result.error is not None and result.error.startswith("connect failed")


def test_a_refused_url_makes_no_connection() -> None:
    async def run() -> tuple[DeliveryResult, Server]:
        async with serving(reply(200)) as server:
            strict = client(allow_loopback=False)
            return await strict.post(f"http://127.0.0.1:{server.port}/", BODY, {}), server

    result, server = asyncio.run(run())
    assert result.refused and not result.delivered
    assert result.error == "refused: the host is a loopback address (127.0.0.1)"
    assert (result.status, result.address) == (None, None)
    assert server.connections == 0


def test_the_checked_address_is_connected_to_with_the_name_in_host() -> None:
    async def run() -> tuple[DeliveryResult, Server]:
        async with serving(reply(200)) as server:
            pinned = client(resolver=answering({"hooks.example.test": "127.0.0.1"}))
            url = f"http://hooks.example.test:{server.port}/in"
            return await pinned.post(url, BODY, {}), server

    result, server = asyncio.run(run())
    assert result.delivered and result.address == "127.0.0.1"
    assert server.requests[0].headers["host"] == f"hooks.example.test:{server.port}"


def test_a_name_that_now_resolves_to_a_private_address_is_refused_at_delivery() -> None:
    async def run() -> tuple[DeliveryResult, Server]:
        async with serving(reply(200)) as server:
            moved = client(resolver=answering({"hooks.example.test": "10.0.0.7"}))
            url = f"http://hooks.example.test:{server.port}/in"
            return await moved.post(url, BODY, {}), server

    result, server = asyncio.run(run())
    assert result.refused
    assert result.error == "refused: the host resolves to a private address"
    assert server.connections == 0


def test_a_resolver_that_hangs_is_refused_in_time() -> None:
    async def hangs(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)  # a resolver that hangs: 30 s, far past the timeout
        return ["127.0.0.1"]

    quick = WebhookClient(
        resolver=hangs,
        allow_loopback=True,
        require_https=False,
        connect_timeout_s=1.0,
        timeout_s=2.0,
        max_response_bytes=0,
        resolve_timeout_s=0.2,
    )
    result = asyncio.run(quick.post("http://hooks.example.test/", BODY, {}))
    assert result.refused and result.error == "refused: the host did not resolve in time"
    assert result.latency_ms < 1000


def certificate_for(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for `name` and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, bytes]:
    """A server context for hooks.example.test and the certificate a client trusts."""
    cert_pem, key_pem = certificate_for("hooks.example.test")
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(key_pem)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return server_context, cert_pem


def test_tls_uses_the_url_name_for_sni_and_verification(
    tls: tuple[ssl.SSLContext, bytes],
) -> None:
    server_context, cert_pem = tls
    server_names: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    trusting = ssl.create_default_context(cadata=cert_pem.decode())

    async def run(name: str) -> DeliveryResult:
        async with serving(reply(200, b"ok"), server_context) as server:
            pinned = client(resolver=answering({name: "127.0.0.1"}), ssl_context=trusting)
            return await pinned.post(f"https://{name}:{server.port}/in", BODY, {})

    result = asyncio.run(run("hooks.example.test"))
    assert result.delivered and result.response_excerpt == "ok"
    assert server_names == ["hooks.example.test"]
    # The same server under another name: its certificate does not match, so nothing is
    # sent, although the pinned address is the same.
    other = asyncio.run(run("other.example.test"))
    assert other.status is None and other.error is not None
    assert other.error.startswith("connect failed") and "certificate" in other.error.lower()


def test_from_settings_requires_https_in_prod_unless_told() -> None:
    # The name resolves to a private address: a URL that passes the https rule is then
    # refused for that instead, so no test here connects anywhere.
    async def refusal(settings: NotifySettings, environment: str) -> str | None:
        webhooks = WebhookClient.from_settings(
            settings, environment=environment, resolver=answering({"example.com": "10.0.0.7"})
        )
        try:
            return (await webhooks.post("http://example.com/", BODY, {})).error
        finally:
            await webhooks.aclose()

    https_only = "refused: the URL must use https"
    private = "refused: the host resolves to a private address"
    assert asyncio.run(refusal(NotifySettings(), "prod")) == https_only
    assert asyncio.run(refusal(NotifySettings(), "dev")) == private
    assert asyncio.run(refusal(NotifySettings(require_https=False), "prod")) == private
    assert asyncio.run(refusal(NotifySettings(require_https=True), "dev")) == https_only
    local = WebhookClient.from_settings(NotifySettings(), environment="dev")
    assert asyncio.run(local.post("http://127.0.0.1:9/", BODY, {})).refused


def test_from_settings_keeps_the_registration_url_limit() -> None:
    # A URL as long as registration accepts (max_url_chars) is judged, not refused as long.
    long_url = "http://example.com/" + "a" * 3000
    settings = NotifySettings(max_url_chars=4096)
    webhooks = WebhookClient.from_settings(
        settings, environment="dev", resolver=answering({"example.com": "10.0.0.7"})
    )
    result = asyncio.run(webhooks.post(long_url, BODY, {}))
    assert result.error == "refused: the host resolves to a private address"
    short = WebhookClient.from_settings(NotifySettings(max_url_chars=2048), environment="dev")
    refused = asyncio.run(short.post(long_url, BODY, {}))
    assert refused.error == "refused: the URL is longer than 2048 characters"
