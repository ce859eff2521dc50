"""No secret or personal datum reaches a log line: every kind the masks know, seeded in the
path, the query (raw, percent-encoded, form-encoded, twice encoded), every header, the
method and the body, through the real app (fake Triton) and the app's own formatter. And
the masks stay cheap: linear in the text, and skipped for text with nothing to mask."""

from __future__ import annotations

import io
import random
import re
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from frontend.middleware.request_id import client_request_id
from frontend.observability.logging import apply_patterns, mask
from tests.log_seeds import (
    BEARER,
    HEADERS,
    PII,
    SECRET_PARAMS,
    captured_logs,
    leaks,
    path_seeds,
    query_variants,
    seeded_text,
)

from .test_frontend_errors import ADMIN_KEY, FakeTriton, _client

PLACEHOLDERS = (
    "[EMAIL]",
    "[PHONE]",
    "[CARD]",
    "[SSN]",
    "[IBAN]",
    "[AWS_KEY]",
    "[API_KEY]",
    "[JWT]",
    "[REDACTED]",
)


@pytest.fixture
def client(tmp_path):
    c = _client(tmp_path, FakeTriton())
    yield c
    c.__exit__(None, None, None)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What the app's formatter writes, as on stderr (not httpx's own request log)."""
    with captured_logs() as sink:
        yield sink


def _send_every_seed(client) -> int:
    """Each seed in each place a request can carry it; returns the number of requests."""
    text = seeded_text()
    sent = 0

    def send(method: str, url: str, **kwargs) -> None:
        nonlocal sent
        client.request(method, url, **kwargs)
        sent += 1

    for value in path_seeds():
        once, twice = quote(value, safe=""), quote(quote(value, safe=""), safe="")
        send("POST", f"/v1/models/{once}/predict", json={"inputs": "x"})
        send("POST", f"/v1/models/{twice}/predict", json={"inputs": "x"})
        send("GET", f"/v1/models/intent/versions/{once}")
        # The client's own request id: refused and replaced when it is not plainly an id.
        send("GET", "/v1/models", headers={"X-Request-ID": value})
    for query in query_variants():
        send("POST", f"/v1/models/intent/predict?{query}", json={"inputs": "fine"})
        send("GET", f"/v1/models?{query}")
    for name in HEADERS:
        send("POST", "/v1/models/intent/predict", json={"inputs": "ok"}, headers={name: text})
    send("GET", "/v1/models", headers={"Authorization": f"Bearer {BEARER}", "X-API-Key": ""})
    send("GET", "/v1/models", headers={"X-API-Key": PII["api_key"]})
    # The method is the client's word too.
    send(PII["api_key"], "/v1/models")
    # Bodies: valid, with unknown fields, broken JSON; a login with them.
    send("POST", "/v1/models/intent/predict", json={"inputs": [text, text]})
    send("POST", "/v1/models/intent/predict", json={"inputs": "x", "extra": text, text: 1})
    send("POST", "/v1/models/intent/predict", content=b'{"inputs": "' + text.encode() + b"\r\n")
    send("POST", "/v1/embeddings", json={"model": PII["email"], "input": text})
    send("POST", "/v1/chat/completions", json={"model": "chat", "messages": text})
    send(
        "POST",
        "/v1/auth/token",
        json={"username": PII["email"], "password": SECRET_PARAMS["password"]},
    )
    return sent


def test_no_seeded_secret_or_personal_datum_reaches_the_logs(client, captured):
    sent = _send_every_seed(client)
    logged = captured.getvalue()
    access = [line for line in logged.splitlines() if '"infergate.access"' in line]
    assert len(access) >= sent  # every request was logged ...
    assert leaks(logged) == []  # ... and nothing seeded in it survived
    missing = [p for p in PLACEHOLDERS if p not in logged]
    assert missing == []  # masked where it was, not dropped or never logged
    assert ADMIN_KEY not in logged


def test_a_clients_request_id_is_kept_beside_ours_only_when_plainly_an_id(client, captured):
    theirs = "client-chosen-id-42"
    echoed = client.get("/v1/models", headers={"X-Request-ID": theirs})
    assert echoed.headers["X-Request-ID"] == theirs
    refused = [
        client.get("/v1/models", headers={"X-Request-ID": v}).headers["X-Request-ID"]
        for v in (PII["aws_key"], PII["api_key"], PII["jwt"], PII["ssn"], "a" * 65, "a b")
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", r) for r in refused), refused
    records = [line for line in captured.getvalue().splitlines() if '"infergate.access"' in line]
    mine = next(line for line in records if theirs in line)
    # Logged as the client's, beside an id we made: `request_id` is never client input.
    assert f'"client_request_id":"{theirs}"' in mine
    assert re.search(r'"request_id":"[0-9a-f]{32}"', mine)
    assert leaks(captured.getvalue()) == []


@pytest.mark.parametrize(
    ("raw", "telltale"),
    [
        ("ssn 123-45-6789 on file", "6789"),
        ("ssn 123 45 6789", "6789"),
        ("iban=de89370400440532013000", "3704"),  # lower case: masked by its name
        ("pay DE89 3704 0044 0532 0130 00 now", "0532"),
        ("pay GB82WEST12345698765432", "WEST1234"),
        ("aws AKIAIOSFODNN7EXAMPLE", "IOSFODNN"),
        ("temporary ASIAY34FZKBOKMUTVV7A", "Y34FZKB"),
        ("to jane%40example.com", "example"),
        ("to jane%2540example.com", "example"),  # encoded twice
        ("card=4111%201111%201111%201111", "1111"),
        ("card 4111+1111+1111+1111", "1111"),
        ("pwd=hunter2", "hunter2"),
        ("user_password: hunter2", "hunter2"),
        ('{"access_token": "abc.def"}', "abc.def"),
        ("x-auth-token=abc123", "abc123"),
        ("client_secret=topsecret&x=1", "topsecret"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("IG_LIVE_0f0f0f0f0f0f0f0f_AbCdEf", "AbCdEf"),  # any case
        # A pair inside another pair's value (a URL with its scheme) is still found.
        ("GET http://host:8000/v1/models/pwd=hunter2/predict", "hunter2"),
        ("call +1+(555)+123-4567", "4567"),  # a form-encoded phone number
    ],
)
def test_mask(raw, telltale):
    assert telltale not in mask(raw)


def test_mask_leaves_ordinary_text_alone():
    for text in (
        "/v1/models/sentiment/versions/2/predict",
        "top_k=3&verbose=true",
        "request",
        "routing overrides not applied",
        "0123456789abcdef",  # a key id
    ):
        assert mask(text) == text


def test_mask_is_linear_in_the_text():
    # Unanchored patterns made these quadratic: 16 KB of letters took 3 s on the event loop.
    worst = 0.0
    for unit in ("a", "1", "a@", "token", "1 ", "a=", "A1", "eyJ", "%41"):
        text = unit * (32768 // len(unit))
        started = time.perf_counter()
        mask(text)
        worst = max(worst, time.perf_counter() - started)
    print(f"worst 32 KB mask: {worst * 1000:.1f} ms")
    assert worst < 1.5  # quadratic: > 10 s here


def test_the_cheap_prechecks_never_skip_text_a_pattern_would_change():
    rng = random.Random(11)
    pieces = [
        *[c for c in "0123456789"] * 3,
        " ",
        "-",
        "+",
        "(",
        ")",
        ".",
        "_",
        "@",
        "=",
        ":",
        "DE",
        "GB82",
        "WEST",
        "AKIA",
        "ASIA",
        "A3T",
        "eyJ",
        "ig_live_",
        "sk-",
        "bearer ",
        "Basic ",
        "token",
        "pwd",
        "a",
        "Z",
        "example.com",
    ]
    changed = 0
    for _ in range(30000):
        # A few kinds of piece per string, so that each trigger is often the only one.
        kinds = rng.sample(pieces, rng.randint(2, 8))
        text = "".join(rng.choice(kinds) for _ in range(rng.randint(1, 30)))
        masked = apply_patterns(text, gated=False)
        changed += masked != text
        assert apply_patterns(text) == masked, text
    assert changed > 1000  # the generator does reach every pattern often


def test_request_id_charset_and_length():
    assert client_request_id("0f8c2a9e-4b7d-4c1e-9a2f-6d5e4c3b2a10") is not None
    assert client_request_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    for bad in ("", "x" * 65, "-leading", "a b", "a\r\nb", "a%40b", "ig_live_x_y", "a=b"):
        assert client_request_id(bad) is None, bad


def test_a_long_traceback_keeps_its_last_lines_and_is_masked():
    import json
    import logging
    import sys

    from frontend.observability.logging import MAX_FIELD_CHARS, JsonFormatter

    try:
        try:
            raise ValueError("x" * (2 * MAX_FIELD_CHARS))  # a cause far longer than a field
        except ValueError as cause:
            raise RuntimeError("the model fell over for alice@example.com") from cause
    except RuntimeError:
        record = logging.LogRecord("infergate", logging.ERROR, "", 0, "boom", None, sys.exc_info())
    exception = json.loads(JsonFormatter().format(record))["exception"]
    assert re.match(r"\[\d+ more\]\.\.\.", exception)  # the head was cut ...
    assert exception.endswith("RuntimeError: the model fell over for [EMAIL]")  # ... not the end
    assert len(exception) <= MAX_FIELD_CHARS + 20
