"""Structured JSON logs with PII masking. Every record is one JSON line (CRLF and ANSI in
inputs are escaped by the encoder); emails, phone and card numbers, API keys, bearer
tokens and JWTs are masked in every string field before it is written."""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from typing import Any

import orjson

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [REDACTED]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[JWT]"),
    (re.compile(r"\big_(?:live|test|admin)_[A-Za-z0-9_-]+"), "[API_KEY]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "[API_KEY]"),
    (
        re.compile(
            r"(?i)\b(api[_-]?key|token|secret|password|authorization)([\"']?\s*[:=]\s*)"
            r"[\"']?[^\s\"'&,;]+"
        ),
        r"\1\2[REDACTED]",
    ),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[EMAIL]"),
    (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), "[CARD]"),
    (
        re.compile(r"(?<![\w.])\+?\d{1,3}[ (.-]{0,2}\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}\b"),
        "[PHONE]",
    ),
)


def fingerprint(identifier: str) -> str:
    """A stable short stand-in for an account id in logs: the same user reads the same in
    every line (so incidents can be followed), the id itself never appears."""
    return "fp_" + hashlib.blake2b(identifier.encode(), digest_size=6).hexdigest()


def mask(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
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
# a phone number to the masks; skipping them also keeps the access log cheap).
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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        safe = {k: payload.pop(k) for k in _SAFE_FIELDS if k in payload}
        return orjson.dumps({**safe, **_masked(payload)}, default=str).decode()


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
