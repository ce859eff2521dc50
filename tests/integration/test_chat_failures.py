"""Overload and mid-stream failures of text generation, on a private Triton whose `chat`
model has 1 slot and a queue of 1, and fails on purpose for seed 7 after 3 tokens (a
test build: the `test_fail_on_seed` parameter exists only in this copy's config)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import aiohttp
import httpx
import pytest

from export.triton_config import read_config, write_config
from export.triton_launcher import EmbeddedTriton

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
