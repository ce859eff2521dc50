"""SSRF protection for webhook URLs: what a receiver's URL may say, and where it may lead.

A webhook URL is chosen by a user but fetched by the server, from inside its network, so
it must never reach loopback, private, link-local (cloud metadata) or other non-public
addresses. Two stages, both run at registration and again at every delivery:

- `parse_url` checks the syntax: http(s) only, no credentials, no fragment, no control
  characters, no numeric host forms that parsers disagree on (`127.1`, `0x7f.0.0.1`,
  `2130706433`), and judges an IP-literal host right away.
- `resolve_checked` resolves a name (under a deadline) and judges EVERY address it gets:
  one bad address refuses the URL, since a DNS answer that mixes a public and a private
  address is the classic rebinding trick. It returns the address the caller must connect
  to, so that nothing resolves the name a second time (and gets another answer).

Choices (see also `refusal`):
- A fragment is refused, not dropped: it is never sent to the receiver, so a URL with one
  does not mean what its author thinks, and the stored URL stays exactly what is delivered.
- NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged by the IPv4 address they
  embed: refused when that one would be, allowed when it is public. NAT64 must be allowed
  for public receivers because an IPv6-only host behind DNS64 sees every IPv4 receiver
  that way; 6to4 is judged the same way for consistency. The local-use NAT64 prefix
  64:ff9b:1::/48, IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses
  are refused outright: no public receiver needs them and the OS may route them to IPv4.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import anyio

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the host's IP addresses as strings; an OSError means no answer."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
# One DNS label after IDNA encoding; `_` is tolerated (some service names use it).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A last label that WHATWG URL parsers (and inet_aton) read as a number, which makes the
# whole host an IPv4 address in some non-canonical form.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_PORT = re.compile(r"[0-9]{1,5}")
# Control, format (zero-width, bidi overrides) and separator characters: never part of a
# URL, and the usual way to smuggle a different URL past one parser into another.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class UnsafeUrl(ValueError):
    """A webhook URL that is refused; str(exc) is a short reason fit for an API error."""


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed `parse_url`; `url` is its normalised form."""

    url: str
    scheme: str  # "http" | "https"
    host: str  # lower-case; IDNA (ASCII) for names; an IP literal without brackets
    port: int  # explicit or the scheme's default
    target: str  # path + query to send ("/" when empty); never a fragment


async def system_resolver(host: str, port: int) -> list[str]:
    """The OS resolver (getaddrinfo, TCP), de-duplicated with the OS's order kept."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses = (
        str(sockaddr[0]) for family, _, _, _, sockaddr in infos if family in _INET_FAMILIES
    )
    return list(dict.fromkeys(addresses))


# --- syntax -------------------------------------------------------------------------------


def parse_url(
    url: str, *, require_https: bool, allow_loopback: bool, max_chars: int = 2048
) -> CheckedUrl:
    """Check a webhook URL's syntax and, for an IP-literal host, its address; raise
    UnsafeUrl with the reason when it is refused."""
    _check_characters(url, max_chars)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced "[" in the authority
        raise UnsafeUrl("the URL is malformed") from exc
    scheme = _check_scheme(parts.scheme, require_https)
    host, explicit_port = _split_authority(parts.netloc)
    port = explicit_port if explicit_port is not None else _DEFAULT_PORTS[scheme]
    literal = _ip_literal(host)
    if literal is not None:
        _refuse_address(literal, allow_loopback=allow_loopback, verb="is", show=True)
    target = _percent_encode_non_ascii(parts.path or "/")
    if parts.query:
        target += "?" + _percent_encode_non_ascii(parts.query)
    return CheckedUrl(
        url=f"{scheme}://{_authority(host, port, scheme)}{target}",
        scheme=scheme,
        host=host,
        port=port,
        target=target,
    )


def _check_characters(url: str, max_chars: int) -> None:
    if len(url) > max_chars:
        raise UnsafeUrl(f"the URL is longer than {max_chars} characters")
    if any(unicodedata.category(char) in _BAD_CATEGORIES for char in url):
        raise UnsafeUrl("the URL contains whitespace or control characters")
    # Browsers read "\" as "/" in http(s) URLs and urllib does not: refusing it leaves
    # no URL that two parsers split into different hosts.
    if "\\" in url:
        raise UnsafeUrl("the URL contains a backslash")
    if "#" in url:
        raise UnsafeUrl("the URL has a fragment (it would never be sent)")


def _check_scheme(scheme: str, require_https: bool) -> str:
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeUrl("the URL must use http or https")
    if require_https and scheme != "https":
        raise UnsafeUrl("the URL must use https")
    return scheme


def _split_authority(netloc: str) -> tuple[str, int | None]:
    """(host, explicit port) from the authority; the host normalised (see CheckedUrl)."""
    if "@" in netloc:
        raise UnsafeUrl("the URL must not contain credentials (user@)")
    if not netloc:
        raise UnsafeUrl("the URL has no host")
    if netloc.startswith("["):
        inside, bracket, rest = netloc[1:].partition("]")
        if not bracket:
            raise UnsafeUrl("the URL is malformed")
        return _ipv6_literal(inside), _port(rest)
    host, colon, port = netloc.partition(":")
    return _host_name_or_ipv4(host), _port(colon + port)


def _port(rest: str) -> int | None:
    """The port from what follows the host: "" (none) or ":<1..65535>"."""
    if not rest:
        return None
    digits = rest[1:]
    if not rest.startswith(":") or not _PORT.fullmatch(digits) or not 1 <= int(digits) <= 65535:
        raise UnsafeUrl("the URL's port must be a number from 1 to 65535")
    return int(digits)


def _ipv6_literal(text: str) -> str:
    # A zone ("%eth0") names a local interface: meaningless for a remote receiver.
    if "%" in text:
        raise UnsafeUrl("the URL's IPv6 address must not have a zone")
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError as exc:
        raise UnsafeUrl("the URL's IPv6 address is not valid") from exc


def _host_name_or_ipv4(host: str) -> str:
    """A name (lower-case, IDNA-encoded, trailing dot stripped) or a canonical IPv4."""
    if not host:
        raise UnsafeUrl("the URL has no host")
    name = _idna(host.lower())
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    # Checked after IDNA so that full-width digits and dots ("１２７．１") count too.
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        if not _CANONICAL_IPV4.fullmatch(name):
            raise UnsafeUrl("the host is an ambiguous numeric address (use a.b.c.d)")
        return name
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UnsafeUrl("the host name is not valid")
    return name


def _idna(host: str) -> str:
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise UnsafeUrl("the host name is not valid") from exc


def _percent_encode_non_ascii(text: str) -> str:
    """Non-ASCII characters as UTF-8 %XX (a request target is ASCII); the rest as given."""
    return "".join(char if char.isascii() else quote(char, safe="") for char in text)


def _authority(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# --- addresses ----------------------------------------------------------------------------


def _networks(*rules: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(network), reason) for network, reason in rules)


# Named first, so that a refusal says why; the `is_global` rule after them is the base.
# Loopback is judged apart from these (allow_loopback).
_V4_REFUSED = _networks(
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "this-network (0.0.0.0/8)"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("169.254.169.254/32", "link-local (cloud metadata)"),
    ("169.254.0.0/16", "link-local"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_REFUSED = _networks(
    ("::/128", "unspecified"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::/96", "IPv4-compatible"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_V4_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_V6_LOOPBACK = ipaddress.IPv6Address("::1")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Every public IPv6 unicast address is in 2000::/3; Python's own tables (`is_global`)
# vary between patch releases, this rule does not.
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def refusal(ip: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why a webhook may not connect to `ip` (a short category, e.g. "private"), or None
    when it may. allow_loopback allows 127.0.0.0/8 and ::1, nothing else."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_refusal(ip, allow_loopback=allow_loopback)
    return _v6_refusal(ip, allow_loopback=allow_loopback)


def _v4_refusal(ip: ipaddress.IPv4Address, *, allow_loopback: bool) -> str | None:
    if ip in _V4_LOOPBACK:
        return None if allow_loopback else "loopback"
    named = _named(ip, _V4_REFUSED)
    if named is not None:
        return named
    return None if ip.is_global else "non-public"


def _v6_refusal(ip: ipaddress.IPv6Address, *, allow_loopback: bool) -> str | None:
    if ip.scope_id is not None:
        return "scoped (zone) IPv6"
    if ip == _V6_LOOPBACK:
        return None if allow_loopback else "loopback"
    named = _named(ip, _V6_REFUSED)
    if named is not None:
        return _with_embedded(named, ip.ipv4_mapped)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        # Judged as the IPv4 it reaches; loopback never, whatever allow_loopback says.
        inner = _v4_refusal(embedded, allow_loopback=False)
        kind = "NAT64" if ip in _NAT64 else "6to4"
        return None if inner is None else f"{kind}-embedded {inner}"
    if ip not in _V6_GLOBAL_UNICAST:
        return "reserved"
    return None if ip.is_global else "non-public"


def _named(ip: IPAddress, rules: tuple[tuple[IPNetwork, str], ...]) -> str | None:
    return next((reason for network, reason in rules if ip in network), None)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 (its last 32 bits) or 6to4 (bits 16..48) address reaches."""
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip.sixtofour


def _with_embedded(reason: str, mapped: ipaddress.IPv4Address | None) -> str:
    """A mapped address's reason also names what it maps to, for the error message."""
    if mapped is None:
        return reason
    inner = _v4_refusal(mapped, allow_loopback=False)
    return reason if inner is None else f"{reason} ({inner})"


def _article(word: str) -> str:
    starts_with_vowel_sound = word[0].lower() in "aeio" or (
        word[0].lower() == "u" and not word.startswith("uni")
    )
    return "an" if starts_with_vowel_sound else "a"


def _refuse_address(ip: IPAddress, *, allow_loopback: bool, verb: str, show: bool) -> None:
    """`show`: name the address (a literal the caller wrote); a resolved one is not
    named, so that refusals do not map the server's internal DNS for the caller."""
    reason = refusal(ip, allow_loopback=allow_loopback)
    if reason is not None:
        shown = f" ({ip})" if show else ""
        raise UnsafeUrl(f"the host {verb} {_article(reason)} {reason} address{shown}")


# --- resolution ---------------------------------------------------------------------------


async def resolve_checked(
    url: CheckedUrl, resolver: Resolver, *, allow_loopback: bool, timeout_s: float
) -> str:
    """The IP address to connect to for `url`: an IP-literal host as is, a name resolved
    under `timeout_s`. Every address the name resolves to must be allowed; the first one
    is returned, and the caller connects to it and to nothing else."""
    literal = _ip_literal(url.host)
    if literal is not None:
        _refuse_address(literal, allow_loopback=allow_loopback, verb="is", show=True)
        return str(literal)
    addresses = [_parse_answer(answer) for answer in await _lookup(url, resolver, timeout_s)]
    if not addresses:
        raise UnsafeUrl("the host has no address")
    for address in addresses:
        _refuse_address(address, allow_loopback=allow_loopback, verb="resolves to", show=False)
    return str(addresses[0])


async def _lookup(url: CheckedUrl, resolver: Resolver, timeout_s: float) -> list[str]:
    try:
        with anyio.fail_after(timeout_s):
            return await resolver(url.host, url.port)
    except TimeoutError as exc:  # before OSError: TimeoutError is one
        raise UnsafeUrl("the host did not resolve in time") from exc
    except OSError as exc:  # socket.gaierror: no such name, no answer
        raise UnsafeUrl("the host did not resolve") from exc


def _parse_answer(answer: str) -> IPAddress:
    try:
        return ipaddress.ip_address(answer)
    except ValueError as exc:
        raise UnsafeUrl("the host resolved to something that is not an address") from exc
