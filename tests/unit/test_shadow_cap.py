"""Shadow traffic never queues behind itself: at most `max_shadow_in_flight` shadow calls
run per worker; the rest are skipped and counted (docs/routing.md, "Shadow")."""

from __future__ import annotations

import asyncio
import re
import time

from frontend.settings import RoutingSettings

from .test_frontend_errors import FakeTriton, _client


class HoldingTriton(FakeTriton):
    """Answers the primary version at once; holds every call to `held_version` until
    released, as a slow shadow version would."""

    def __init__(self, held_version: str) -> None:
        super().__init__()
        self.held_version = held_version
        self.holding = 0  # calls waiting for release now
        self.release: asyncio.Event | None = None

    async def infer(self, model, inputs, model_version="", outputs=(), **kwargs):
        if model_version == self.held_version:
            if self.release is None:
                self.release = asyncio.Event()
            self.holding += 1
            await self.release.wait()
            self.holding -= 1
        return await super().infer(model, inputs, model_version, outputs, **kwargs)


def shadow_items(client, result: str) -> float:
    text = client.get("/metrics").text
    pattern = rf'infergate_shadow_items_total{{[^}}]*result="{result}"[^}}]*}} (\S+)'
    return sum(float(v) for v in re.findall(pattern, text))


def wait_until(predicate, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_shadow_calls_are_capped_and_the_rest_skipped(tmp_path):
    fake = HoldingTriton(held_version="1")
    client = _client(tmp_path, fake, routing=RoutingSettings(max_shadow_in_flight=2))
    try:
        r = client.put(
            "/v1/admin/routing/intent",
            json={"default": "2", "shadow": {"version": "1", "percent": 100}},
        )
        assert r.status_code == 200, r.text

        def shadow_calls() -> int:
            return sum(1 for _, version, _ in fake.calls if version == "1")

        texts = ["one", "two", "three"]
        for i in range(5):
            answer = client.post("/v1/models/intent/predict", json={"inputs": texts})
            assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "2"
            if i < 2:  # its shadow call holds a slot before the next request comes
                wait_until(lambda n=i + 1: fake.holding == n, f"shadow call {i + 1} to start")
        # Two shadow calls hold both slots; three requests found them taken.
        assert shadow_items(client, "skipped") == 3 * len(texts)
        assert fake.release is not None
        client.portal.call(fake.release.set)
        wait_until(lambda: shadow_items(client, "agree") == 2 * len(texts), "the shadows")
        assert shadow_calls() == 2
    finally:
        client.__exit__(None, None, None)
