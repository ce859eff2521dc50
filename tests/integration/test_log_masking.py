"""No secret or personal datum reaches the JSON logs, with real parts: the app under
uvicorn on a real socket, real Triton behind it (predict, embeddings and chat run for
real). Every kind the masks know is seeded in the path, the query (raw, percent-encoded,
form-encoded, twice encoded), every header and the body; the logs hold none of them."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from procs.wait import wait_for
from tests.log_seeds import (
    BEARER,
    HEADERS,
    PII,
    captured_logs,
    leaks,
    path_seeds,
    query_variants,
    seeded_text,
)

from .conftest import ADMIN, ADMIN_KEY

pytestmark = pytest.mark.integration


def test_no_seeded_secret_or_personal_datum_reaches_the_logs(frontend):
    text = seeded_text()
    sent = 0
    with captured_logs() as sink:
        with httpx.Client(base_url=frontend.url, timeout=120, headers=ADMIN) as http:

            def send(method: str, url: str, logged: bool = True, **kwargs) -> None:
                nonlocal sent
                http.request(method, url, **kwargs)
                sent += logged

            for value in path_seeds():
                once = quote(value, safe="")
                send("POST", f"/v1/models/{once}/predict", json={"inputs": "x"})
                send("POST", f"/v1/models/{quote(once, safe='')}/predict", json={"inputs": "x"})
                send("GET", "/v1/models", headers={"X-Request-ID": value})
            for query in query_variants():
                send("POST", f"/v1/models/sentiment/predict?{query}", json={"inputs": "fine"})
            for name in HEADERS:
                send(
                    "POST",
                    "/v1/models/sentiment/predict",
                    json={"inputs": "ok"},
                    headers={name: text},
                )
            send(
                "GET", "/v1/models", headers={"Authorization": f"Bearer {BEARER}", "X-API-Key": ""}
            )
            send("GET", "/v1/models", headers={"X-API-Key": PII["api_key"]})
            # uvicorn's parser refuses an unknown method itself (400, before the app).
            send(PII["api_key"], "/v1/models", logged=False)
            # Bodies that reach Triton: a classification, an embedding, a generation.
            send("POST", "/v1/models/sentiment/predict", json={"inputs": [text, text]})
            send("POST", "/v1/embeddings", json={"model": "embed", "input": text})
            send(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "chat",
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": 4,
                },
            )
            send(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "chat",
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": 4,
                    "stream": True,
                },
            )
            # And bodies refused before: unknown fields, broken JSON, a failed login.
            send("POST", "/v1/models/sentiment/predict", json={"inputs": "x", "extra": text})
            send("POST", "/v1/models/sentiment/predict", content=b'{"inputs": "' + text.encode())
            send("POST", "/v1/auth/token", json={"username": PII["email"], "password": text})
        # The access record is written just after the response is sent: wait for it.
        wait_for(
            lambda: sink.getvalue().count('"infergate.access"') >= sent,
            f"{sent} access records",
            10,
            interval_s=0.02,
        )
    logged = sink.getvalue()
    assert logged.count('"infergate.access"') >= sent  # every request was logged ...
    assert leaks(logged) == []  # ... and nothing seeded in it survived
    for placeholder in ("[EMAIL]", "[SSN]", "[IBAN]", "[AWS_KEY]", "[CARD]", "[REDACTED]"):
        assert placeholder in logged  # masked where it was, not dropped
    assert ADMIN_KEY not in logged
