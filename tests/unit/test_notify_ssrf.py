"""SSRF protection for webhook URLs (frontend/notify/ssrf.py): every refused form, with a
reason that names its category, and the forms that must still be accepted."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import pytest

from frontend.notify.ssrf import (
    CheckedUrl,
    Resolver,
    UnsafeUrl,
    parse_url,
    refusal,
    resolve_checked,
    system_resolver,
)

PUBLIC = "93.184.216.34"


def answering(answers: dict[str, list[str]]) -> Resolver:
    """A resolver that knows only `answers`; any other name does not exist."""

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


async def hanging(host: str, port: int) -> list[str]:
    await asyncio.sleep(30)  # a resolver that hangs: 30 s, far past the timeout
    return [PUBLIC]


def check(
    url: str,
    resolver: Resolver | None = None,
    *,
    allow_loopback: bool = False,
    require_https: bool = False,
) -> tuple[CheckedUrl, str]:
    """Both stages, as a delivery runs them: (the checked URL, the address to connect to)."""

    async def run() -> tuple[CheckedUrl, str]:
        checked = parse_url(url, require_https=require_https, allow_loopback=allow_loopback)
        address = await resolve_checked(
            checked,
            resolver or answering({"example.com": [PUBLIC]}),
            allow_loopback=allow_loopback,
            timeout_s=0.2,
        )
        return checked, address

    return asyncio.run(run())


def reason(url: str, resolver: Resolver | None = None, **options: bool) -> str:
    with pytest.raises(UnsafeUrl) as refused:
        check(url, resolver, **options)
    return str(refused.value)


@pytest.mark.parametrize(
    ("url", "because"),
    [
        # Schemes
        ("ftp://example.com/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://example.com:70/_", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("example.com/hook", "http or https"),
        # Credentials, even empty
        ("http://user:pass@example.com/", "credentials"),
        ("http://@example.com", "credentials"),
        ("http://example.com@10.0.0.1/", "credentials"),
        # Loopback, private and other non-public IPv4 literals
        ("http://127.0.0.1/", "loopback"),
        ("http://127.0.0.1./", "loopback"),
        ("http://127.255.0.9:8080/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"),
        ("http://169.254.1.1/", "link-local"),
        ("http://100.64.0.1/", "shared address space (CGNAT)"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://0.1.2.3/", "this-network"),
        ("http://224.0.0.1/", "multicast"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://192.0.2.10/", "documentation"),
        ("http://198.18.0.1/", "benchmarking"),
        # IPv6 literals
        ("http://[::1]/", "loopback"),
        ("http://[::]/", "unspecified"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fc00::1]/", "unique-local"),
        ("http://[fd12:3456::1]/", "unique-local"),
        ("http://[fec0::1]/", "site-local"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped (loopback)"),
        ("http://[::ffff:10.0.0.1]/", "IPv4-mapped (private)"),
        ("http://[::ffff:8.8.8.8]/", "IPv4-mapped"),
        ("http://[::10.0.0.1]/", "IPv4-compatible"),
        ("http://[64:ff9b::10.0.0.1]/", "NAT64-embedded private"),
        ("http://[64:ff9b::127.0.0.1]/", "NAT64-embedded loopback"),
        ("http://[64:ff9b:1::1]/", "local-use NAT64"),
        ("http://[2002:a9fe:a9fe::1]/", "6to4-embedded link-local"),
        ("http://[2002:c0a8:101::1]/", "6to4-embedded private"),
        ("http://[2001:db8::1]/", "documentation"),
        ("http://[2001::1]/", "Teredo"),
        ("http://[100::1]/", "discard-only"),
        ("http://[fe80::1%25eth0]/", "zone"),
        # Numeric hosts that parsers disagree on
        ("http://2130706433/", "ambiguous numeric address"),
        ("http://0177.0.0.1/", "ambiguous numeric address"),
        ("http://017700000001/", "ambiguous numeric address"),
        ("http://0x7f.0.0.1/", "ambiguous numeric address"),
        ("http://0x7f000001/", "ambiguous numeric address"),
        ("http://127.1/", "ambiguous numeric address"),
        ("http://10.1.1/", "ambiguous numeric address"),
        ("http://127.000.000.001/", "ambiguous numeric address"),
        ("http://1.2.3.4.5/", "ambiguous numeric address"),
        ("http://example.0x1/", "ambiguous numeric address"),
        # Full-width digits and dots become 127.0.0.1 under IDNA: judged as that.
        ("http://１２７．０．０．１/", "loopback"),
        ("http://１２７．１/", "ambiguous numeric address"),
        # Syntax
        ("http:///hook", "no host"),
        ("http://:80/hook", "no host"),
        ("http://example.com/hook#frag", "fragment"),
        ("http://example.com/hook#", "fragment"),
        ("http://exa mple.com/", "whitespace or control"),
        ("http://example.com/\r\nX-Injected: 1", "whitespace or control"),
        ("http://example.com/\x00", "whitespace or control"),
        ("http://exam\u200bple.com/", "whitespace or control"),
        (" http://example.com/", "whitespace or control"),
        ("http://example.com\\@10.0.0.1/", "backslash"),
        ("http://example.com:0/", "port"),
        ("http://example.com:65536/", "port"),
        ("http://example.com:+80/", "port"),
        ("http://example.com:/", "port"),
        ("http://example.com:８０/", "port"),
        ("http://[::1/", "malformed"),
        ("http://exa%6dple.com/", "not valid"),
        ("http://a..b/", "not valid"),
        ("http://-bad-.example.com/", "not valid"),
        ("http://" + "a" * 64 + ".com/", "not valid"),
    ],
)
def test_refused_forms_name_their_reason(url: str, because: str) -> None:
    assert because in reason(url)


def test_http_is_refused_where_https_is_required() -> None:
    assert "https" in reason("http://example.com/hook", require_https=True)
    checked, _ = check("https://example.com/hook", require_https=True)
    assert checked.scheme == "https"


def test_a_url_longer_than_the_limit_is_refused() -> None:
    url = "https://example.com/" + "a" * 100
    with pytest.raises(UnsafeUrl, match="longer than 64 characters"):
        parse_url(url, require_https=False, allow_loopback=False, max_chars=64)
    assert parse_url(url, require_https=False, allow_loopback=False).target == "/" + "a" * 100


def test_names_resolving_to_loopback_or_private_addresses_are_refused() -> None:
    localhost = answering({"localhost": ["127.0.0.1"]})
    assert reason("http://localhost:8080/", localhost) == (
        "the host resolves to a loopback address"
    )
    internal = answering({"hooks.internal": ["10.0.0.5"]})
    assert reason("https://hooks.internal/", internal) == ("the host resolves to a private address")
    metadata = answering({"metadata.example": ["169.254.169.254"]})
    assert "link-local" in reason("http://metadata.example/", metadata)


def test_one_private_address_among_public_ones_refuses_the_url() -> None:
    # DNS rebinding mixes: whichever address a connect would pick, none may be private.
    mixed = answering({"rebind.example": [PUBLIC, "2606:4700::1111", "192.168.0.10"]})
    refused = reason("https://rebind.example/hook", mixed)
    assert "private" in refused
    assert "192.168.0.10" not in refused and "private" in refused  # the category, not the address


def test_a_name_that_does_not_resolve_is_refused() -> None:
    assert "no address" in reason("https://empty.example/", answering({"empty.example": []}))
    assert "did not resolve" in reason("https://missing.example/", answering({}))
    garbage = answering({"odd.example": ["not-an-ip"]})
    assert "not an address" in reason("https://odd.example/", garbage)


def test_a_resolver_that_hangs_is_cut_off() -> None:
    started = time.perf_counter()
    assert reason("https://slow.example/", hanging) == "the host did not resolve in time"
    assert time.perf_counter() - started < 1.5


def test_an_ip_literal_host_skips_the_resolver() -> None:
    checked, address = check("http://8.8.8.8:8080/x", hanging)
    assert (checked.host, checked.port, address) == ("8.8.8.8", 8080, "8.8.8.8")


def test_a_public_name_is_accepted_and_normalised() -> None:
    checked, address = check("HTTPS://Example.COM./hook?a=1&b=%20")
    assert address == PUBLIC
    assert checked == CheckedUrl(
        url="https://example.com/hook?a=1&b=%20",
        scheme="https",
        host="example.com",
        port=443,
        target="/hook?a=1&b=%20",
    )


def test_the_first_allowed_address_is_the_one_to_connect_to() -> None:
    many = answering({"example.com": ["2606:4700::1111", PUBLIC]})
    assert check("https://example.com/", many)[1] == "2606:4700::1111"


def test_defaults_and_explicit_ports() -> None:
    assert check("http://example.com")[0].port == 80
    bare = check("http://example.com")[0]
    assert (bare.target, bare.url) == ("/", "http://example.com/")
    explicit = check("https://example.com:8443/a")[0]
    assert (explicit.port, explicit.url) == (8443, "https://example.com:8443/a")
    assert check("https://example.com:443/a")[0].url == "https://example.com/a"


def test_international_names_are_idna_encoded() -> None:
    idn = answering({"xn--bcher-kva.example": [PUBLIC]})
    checked, _ = check("https://Bücher.example/ä?q=é", idn)
    assert checked.host == "xn--bcher-kva.example"
    assert checked.target == "/%C3%A4?q=%C3%A9"


def test_a_global_ipv6_literal_is_accepted() -> None:
    checked, address = check("https://[2606:4700:4700::1111]:8443/hook?x=1")
    assert (checked.host, checked.port) == ("2606:4700:4700::1111", 8443)
    assert checked.target == "/hook?x=1"
    assert checked.url == "https://[2606:4700:4700::1111]:8443/hook?x=1"
    assert address == "2606:4700:4700::1111"


def test_nat64_and_6to4_of_a_public_ipv4_are_accepted() -> None:
    # An IPv6-only host behind DNS64 reaches every IPv4 receiver through 64:ff9b::/96.
    assert check("http://[64:ff9b::93.184.216.34]/")[1] == "64:ff9b::5db8:d822"
    assert check("http://[2002:5db8:d822::1]/")[1] == "2002:5db8:d822::1"


def test_loopback_is_allowed_only_when_asked_and_nothing_else_with_it() -> None:
    _, address = check("http://127.0.0.1:8080/hook", allow_loopback=True)
    assert address == "127.0.0.1"
    assert check("http://[::1]:8080/", allow_loopback=True)[1] == "::1"
    localhost = answering({"localhost": ["127.0.0.1", "::1"]})
    assert check("http://localhost:9000/", localhost, allow_loopback=True)[1] == "127.0.0.1"
    for other in [
        "http://10.0.0.1/",
        "http://0.0.0.0/",
        "http://169.254.169.254/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::127.0.0.1]/",
    ]:
        reason(other, allow_loopback=True)
    assert "loopback" in reason("http://127.0.0.1:8080/hook", allow_loopback=False)


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("100.127.255.255", "shared address space (CGNAT)"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "unique-local"),
        ("::ffff:10.0.0.1", "IPv4-mapped (private)"),
        ("::ffff:1.1.1.1", "IPv4-mapped"),
        ("4000::1", "reserved"),
    ],
)
def test_refusal_names_the_category(address: str, category: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_loopback=False) == category


@pytest.mark.parametrize("address", ["8.8.8.8", PUBLIC, "2606:4700::1111", "2a00:1450::1"])
def test_refusal_allows_public_addresses(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_loopback=False) is None


def test_the_system_resolver_answers_a_numeric_host_without_dns() -> None:
    assert asyncio.run(system_resolver("127.0.0.1", 80)) == ["127.0.0.1"]
