"""Structured JSON logs with PII masking. Every record is one JSON line (CRLF and ANSI in
inputs are escaped by the encoder); in every string field, after percent-decoding, emails,
phone, card and social-security numbers, IBANs, API keys (ours, OpenAI-style, AWS access
keys), bearer tokens, JWTs and the values of secret-looking parameters (`pwd=`, `token:`,
`"api_key": ...`) are masked before the line is written.

Masking runs on every line, so every pattern is linear in the text: a pattern that can
start anywhere inside a run of word characters is anchored to the run's start (a
lookbehind), or a long path would cost quadratic time on the event loop (seen: 16 KB of
letters took 3 s with an unanchored e-mail pattern)."""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from typing import Any
from urllib.parse import unquote

import orjson

_AWS_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "A3T")

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]++"), "Bearer [REDACTED]"),
    # Basic credentials are base64: not a plain lower-case word ("basic information").
    (
        re.compile(r"(?i:\bbasic)\s+(?=[a-z]*+[A-Z0-9+/=])[A-Za-z0-9+/]{6,}+=*+"),
        "Basic [REDACTED]",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]++\.[A-Za-z0-9_-]++\.[A-Za-z0-9_-]*+"), "[JWT]"),
    (re.compile(r"(?i)\big_(?:live|test|admin)_[A-Za-z0-9_-]++"), "[API_KEY]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}+"), "[API_KEY]"),
    # AWS access key ids (long-term AKIA, temporary ASIA, and the other documented kinds):
    # 20 characters, the prefix's included.
    (
        re.compile(
            r"\b(?:"
            + "|".join(p if len(p) == 4 else p + "[A-Z0-9]" for p in _AWS_PREFIXES)
            + r")[A-Z0-9]{16}\b"
        ),
        "[AWS_KEY]",
    ),
)
# After the pairs (below): personal data by its shape.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<![\w.+-])[\w.+-]++@[\w-]++(?:\.[\w-]++)+"), "[EMAIL]"),
    # Before cards: a spaced IBAN's digits would otherwise read as a card number.
    (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), "[IBAN]"),
    (re.compile(r"\b\d{3}([ -])\d{2}\1\d{4}\b"), "[SSN]"),
    (re.compile(r"\b(?:\d[ +-]?){12,18}\d\b"), "[CARD]"),
    (
        re.compile(r"(?<![\w.])\+?\d{1,3}[ (.+-]{0,2}\d{2,4}\)?[ .+-]?\d{3,4}[ .+-]?\d{3,4}\b"),
        "[PHONE]",
    ),
)

# name=value, name: value, "name": "value" where the name (80 characters at most) holds
# one of these words (`pwd`, `client_secret`, `x-auth-token`, `iban`, ...): the value is
# masked. Names are found first and checked apart, and a value is never swallowed, so a
# pair inside another pair's value (a URL's query in a message) is found too.
_PAIR_NAME = re.compile(r"(?<![\w.-])([\w.-]{1,80}+)([\"']?\s*+[:=]\s*+[\"']?)")
_SECRET_WORD = re.compile(
    r"(?i)pwd|pass|secret|token|api[_-]?key|apikey|auth|credential|signature|session"
    r"|cookie|iban|ssn|private[_-]?key"
)
_PAIR_VALUE = re.compile(r"[^\s\"'&,;]++")


def _mask_pairs(text: str) -> str:
    if "=" not in text and ":" not in text:
        return text
    pieces: list[str] = []
    done = 0
    for name in _PAIR_NAME.finditer(text):
        if name.start() < done or _SECRET_WORD.search(name[1]) is None:
            continue
        value = _PAIR_VALUE.match(text, name.end())
        if value is not None:
            pieces += (text[done : name.end()], "[REDACTED]")
            done = value.end()
    return "".join([*pieces, text[done:]]) if pieces else text


# Cheap tests that let a string skip a group of patterns none of which could match (most
# paths, every "request" message, a query such as `top_k=3`): each matches wherever a
# pattern of its group could, and more. Kept so by tests/unit/test_log_masking.py
# (random strings, masked with and without them).
_AWS_PREFIX = re.compile("|".join(_AWS_PREFIXES))
_SHAPE_DIGITS = re.compile(r"[A-Z]{2}\d\d|\d[\d\s().+-]{7}")


def _may_hold_keys(text: str) -> bool:
    # Substring tests: several times cheaper than one case-blind regex alternation.
    lowered = text.lower()
    return (
        "bearer" in lowered
        or "basic" in lowered
        or "ig_" in lowered
        or "eyJ" in text
        or "sk-" in text
        or _AWS_PREFIX.search(text) is not None
    )


def _may_hold_shapes(text: str) -> bool:
    return "@" in text or _SHAPE_DIGITS.search(text) is not None


# A logged string longer than this is cut (after masking, so that no cut leaves half a
# secret unmasked): one line stays one readable line.
MAX_FIELD_CHARS = 4096


def fingerprint(identifier: str) -> str:
    """A stable short stand-in for an account id in logs: the same user reads the same in
    every line (so incidents can be followed), the id itself never appears."""
    return "fp_" + hashlib.blake2b(identifier.encode(), digest_size=6).hexdigest()


def percent_decoded(text: str) -> str:
    """`%40` is `@` to whoever reads the log: decode (twice-encoded too) before masking."""
    for _ in range(3):
        if "%" not in text:
            break
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


def apply_patterns(text: str, gated: bool = True) -> str:
    if not gated or _may_hold_keys(text):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    text = _mask_pairs(text)
    if not gated or _may_hold_shapes(text):
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
    return text


def mask(text: str, *, keep_tail: bool = False) -> str:
    text = apply_patterns(percent_decoded(text))
    if len(text) > MAX_FIELD_CHARS:
        cut = len(text) - MAX_FIELD_CHARS
        # A traceback's last lines say what failed: cut its head, not its tail.
        if keep_tail:
            return f"[{cut} more]..." + text[-MAX_FIELD_CHARS:]
        text = text[:MAX_FIELD_CHARS] + f"...[{cut} more]"
    return text


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


# Fields we write ourselves from our own data, never from the client (a timestamp looks like
# a phone number to the masks; skipping them also keeps the access log cheap). The
# request id here is always one we made; a client's own id is `client_request_id`, masked.
_SAFE_FIELDS = (
    "ts",
    "level",
    "logger",
    "request_id",
    "status",
    "duration_ms",
    "method",
    "route",
    "model",
    "version",
    "triton_ms",
)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# strftime costs as much as the rest of a record: made once a second, not once a line.
_last_second: tuple[int, str] = (-1, "")


def _second(epoch_second: int) -> str:
    global _last_second
    cached = _last_second
    if cached[0] != epoch_second:
        cached = (epoch_second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second)))
        _last_second = cached  # one tuple, replaced whole: safe across threads
    return cached[1]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": f"{_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        exception = None
        if record.exc_info:
            exception = mask(self.formatException(record.exc_info), keep_tail=True)
        safe = {k: payload.pop(k) for k in _SAFE_FIELDS if k in payload}
        masked = _masked(payload)
        if exception is not None:
            masked["exception"] = exception
        return orjson.dumps({**safe, **masked}, default=str).decode()


def configure_logging(level: str, json_format: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log duplicates ours and is not masked.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
