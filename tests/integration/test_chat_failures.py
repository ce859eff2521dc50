"""Overload and mid-stream failures of text generation, on a private Triton whose `chat`
model has 1 slot and a queue of 1, and fails on purpose for seed 7 after 3 tokens (a
test build: the `test_fail_on_seed` parameter exists only in this copy's config, and acts
only because this Triton runs with INFERGATE_TEST_HOOKS=1)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import aiohttp
import httpx
import pytest

from export.runtime.chat_model import TEST_HOOKS_ENV
from export.triton_config import read_config, write_config
from export.triton_launcher import EmbeddedTriton
from procs.triton_metrics import model_gauge, wait_for

from .conftest import ADMIN, LiveFrontend, free_ports, frontend_settings
from .test_chat import USER, sse_frames

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_repo(repository, tmp_path_factory):
    repo = tmp_path_factory.mktemp("chat-small")
    shutil.copytree(repository / "chat", repo / "chat", copy_function=shutil.copy)
    config = read_config(repo / "chat" / "config.pbtxt")
    config.parameters["slots"].string_value = "1"
    config.parameters["queue"].string_value = "1"
    config.parameters["test_fail_on_seed"].string_value = "7"
    write_config(config, repo / "chat")
    return repo


@pytest.fixture(scope="module")
def small(small_repo, tmp_path_factory):
    log = (tmp_path_factory.mktemp("triton-small") / "triton.log").open("w")
    server = EmbeddedTriton(small_repo, free_ports(), log_sink=lambda s: print(s, file=log))
    with pytest.MonkeyPatch.context() as env:
        env.setenv(TEST_HOOKS_ENV, "1")  # the failure hook acts only where this is set
        server.start(ready_timeout=300)
    from frontend.app import create_app

    live = LiveFrontend(create_app(frontend_settings(server.grpc_url, small_repo)))
    yield server, live
    live.stop()
    server.stop()
    log.close()


def test_overload_beyond_slots_and_queue_is_503_and_admitted_ones_finish(small):
    _, live = small

    async def one(session: aiohttp.ClientSession) -> tuple[int, str, str | None]:
        body = {"model": "chat", "messages": USER, "max_tokens": 40, "stream": True}
        async with session.post(live.url + "/v1/chat/completions", json=body, headers=ADMIN) as r:
            return r.status, await r.text(), r.headers.get("Retry-After")

    async def burst() -> list[tuple[int, str, str | None]]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(one(session) for _ in range(6)))

    started = time.monotonic()
    results = asyncio.run(burst())
    statuses = sorted(s for s, _, _ in results)
    assert statuses == [200, 200, 503, 503, 503, 503], statuses  # 1 slot + 1 queued
    for status, body, retry_after in results:
        if status == 503:
            assert retry_after is not None and int(retry_after) >= 1
            assert '"code":"overloaded"' in body
        else:
            frames = sse_frames(body)
            assert frames[-1] == ("message", "[DONE]")
            assert '"finish_reason":"length"' in body and "error" not in [e for e, _ in frames]
    assert time.monotonic() - started < 60


def test_model_failure_mid_stream_is_an_error_event_then_done(small):
    _, live = small
    body = {"model": "chat", "messages": USER, "max_tokens": 50, "seed": 7, "stream": True}
    r = httpx.post(live.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=30)
    assert r.status_code == 200  # the failure came after the first byte
    frames = [f for f in sse_frames(r.text) if f[0] != "comment"]
    tokens = [d for e, d in frames if e == "message" and '"content":"' in d]
    assert len(tokens) >= 2  # role chunk + the tokens before the failure
    assert frames[-2][0] == "error" and '"code":"upstream_error"' in frames[-2][1]
    assert frames[-1] == ("message", "[DONE]")
    # The model goes on serving others.
    ok = httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "chat", "messages": USER, "max_tokens": 5},
        headers=ADMIN,
        timeout=30,
    )
    assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] == "length"


def _frontend(server, repo, **generation) -> LiveFrontend:
    from frontend.app import create_app

    tiers = {
        "unlimited": {"rate": [], "tokens_per_day": None},
        "tiny": {"rate": [], "tokens_per_day": 5000},
    }
    auth = {"tiers": tiers, "default_tier": "tiny"}
    settings = frontend_settings(server.grpc_url, repo, auth=auth)
    for name, value in generation.items():
        setattr(settings.generation, name, value)
    return LiveFrontend(create_app(settings))


def _idle_model(server) -> None:
    url = server.metrics_url
    wait_for(
        lambda: (
            model_gauge(url, "infergate_chat_active_sequences", "chat") == 0
            and model_gauge(url, "infergate_chat_queued_sequences", "chat") == 0
        ),
        "an idle chat model",
        60,
    )


def test_admission_deadline_is_504_and_the_model_drops_the_request(small, small_repo):
    """No admission response within the deadline (here 1 ms: no round trip to the model
    is that fast): 504 deadline_exceeded, and the request does not stay in the model."""
    server, _ = small
    _idle_model(server)
    live = _frontend(server, small_repo, admission_timeout_s=0.001)
    try:
        body = {"model": "chat", "messages": USER, "max_tokens": 5}
        r = httpx.post(live.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=30)
        streamed = httpx.post(
            live.url + "/v1/chat/completions",
            json={**body, "stream": True},
            headers=ADMIN,
            timeout=30,
        )
    finally:
        live.stop()
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
    # Before the first frame a stream fails like any request: a status, not an event.
    assert streamed.status_code == 504
    assert streamed.json()["error"]["code"] == "deadline_exceeded"
    _idle_model(server)


def test_idle_deadline_ends_a_request_that_waits_too_long_between_responses(small, small_repo):
    """One slot, held by a long stream: a second request is admitted into the queue and
    then hears nothing more; past the idle deadline (0.5 s here, 60 s by default) it is
    504 deadline_exceeded and leaves the queue, while the first stream goes on."""
    server, live = small
    _idle_model(server)
    impatient = _frontend(server, small_repo, idle_timeout_s=0.5)
    metrics = server.metrics_url

    async def scenario() -> tuple[int, str, float, float]:
        async with aiohttp.ClientSession() as session:
            long_body = {"model": "chat", "messages": USER, "max_tokens": 1000, "stream": True}
            holder = await session.post(
                live.url + "/v1/chat/completions", json=long_body, headers=ADMIN
            )
            await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: wait_for(
                    lambda: model_gauge(metrics, "infergate_chat_active_sequences", "chat") == 1,
                    "the long stream in the slot",
                    30,
                ),
            )
            started = time.monotonic()
            short = {"model": "chat", "messages": USER, "max_tokens": 5}
            async with session.post(
                impatient.url + "/v1/chat/completions", json=short, headers=ADMIN
            ) as r:
                status, text = r.status, await r.text()
            waited = time.monotonic() - started
            still_active = model_gauge(metrics, "infergate_chat_active_sequences", "chat")
            holder.close()
            return status, text, waited, still_active

    try:
        status, text, waited, still_active = asyncio.run(scenario())
    finally:
        impatient.stop()
    print(f"idle deadline 0.5 s: answered after {waited:.2f} s")
    assert status == 504 and json.loads(text)["error"]["code"] == "deadline_exceeded", text
    assert 0.5 <= waited < 10
    assert still_active == 1  # the stream holding the slot was not disturbed
    _idle_model(server)


def test_total_deadline_ends_a_stream_with_an_error_event(small, small_repo):
    """A stream still generating when the whole generation's deadline passes (1 s here,
    300 s by default) ends with an error event deadline_exceeded, then [DONE]."""
    server, _ = small
    _idle_model(server)
    live = _frontend(server, small_repo, timeout_s=1.0)
    body = {"model": "chat", "messages": USER, "max_tokens": 1000, "stream": True}
    try:
        started = time.monotonic()
        r = httpx.post(live.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=30)
        took = time.monotonic() - started
    finally:
        live.stop()
    frames = [f for f in sse_frames(r.text) if f[0] != "comment"]
    assert r.status_code == 200
    assert frames[-2][0] == "error", frames[-3:]
    assert json.loads(frames[-2][1])["error"]["code"] == "deadline_exceeded"
    assert frames[-1] == ("message", "[DONE]")
    assert 1.0 <= took < 10
    _idle_model(server)


def test_a_failed_generation_is_charged_only_what_it_used(small, small_repo):
    """The model fails after 3 tokens (seed 7): the caller's token quota is settled to the
    prompt plus the tokens generated, not the reservation (prompt + max_tokens)."""
    server, _ = small
    _idle_model(server)
    live = _frontend(server, small_repo)
    try:
        probe = {"model": "chat", "messages": USER, "max_tokens": 1}
        prompt = httpx.post(
            live.url + "/v1/chat/completions", json=probe, headers=ADMIN, timeout=30
        ).json()["usage"]["prompt_tokens"]
        created = httpx.post(
            live.url + "/v1/admin/keys", headers=ADMIN, json={"name": "q", "tier": "tiny"}
        ).json()
        caller = {"X-API-Key": created["key"]}
        usage = live.url + "/v1/usage"
        used = lambda: httpx.get(usage, headers=caller).json()["tokens"]["used"]  # noqa: E731
        assert used() == 0
        body = {"model": "chat", "messages": USER, "max_tokens": 500, "seed": 7, "stream": True}
        r = httpx.post(live.url + "/v1/chat/completions", json=body, headers=caller, timeout=30)
        frames = [f for f in sse_frames(r.text) if f[0] != "comment"]
        assert frames[-2][0] == "error" and '"code":"upstream_error"' in frames[-2][1]
        charged = used()
    finally:
        live.stop()
    assert prompt < charged <= prompt + 3, (prompt, charged)


def test_triton_stopped_mid_stream_ends_the_stream_with_an_error(small):
    """Last in this module: it stops the private Triton."""
    server, live = small

    async def stream_and_kill() -> tuple[str, float]:
        body = {"model": "chat", "messages": USER, "max_tokens": 1000, "stream": True}
        seen = []
        async with (
            aiohttp.ClientSession() as session,
            session.post(live.url + "/v1/chat/completions", json=body, headers=ADMIN) as r,
        ):
            killed_at = 0.0
            async for line in r.content:
                seen.append(line.decode())
                if len(seen) > 12 and not killed_at:
                    server.kill()  # kill -9 of Triton and its stubs: no goodbye
                    killed_at = time.monotonic()
            return "".join(seen), time.monotonic() - killed_at

    text, ended_after = asyncio.run(asyncio.wait_for(stream_and_kill(), 60))
    frames = [f for f in sse_frames(text) if f[0] != "comment"]
    assert frames[-2][0] == "error", frames[-3:]
    error = json.loads(frames[-2][1])["error"]
    print(f"stream ended {ended_after:.2f} s after the kill with {error['code']}")
    assert error["code"] == "upstream_unavailable" and error["request_id"]
    assert frames[-1] == ("message", "[DONE]")
    assert ended_after < 5
