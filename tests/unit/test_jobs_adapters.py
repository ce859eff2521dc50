"""The task adapters (frontend/jobs/adapters.py) over the app's own services and the fake
Triton of test_predict_tasks.py: a job's predictions are exactly the synchronous API's,
every call pins the recorded version and skips the cache, a text Triton refuses is that
row's error while its neighbours are predicted, and the batch service (shadow=False)
mirrors nothing to a shadow version."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from frontend.container import services_of
from frontend.db.jobs import JobRow
from frontend.jobs.adapters import adapters_for
from frontend.jobs.pacing import Pacer
from frontend.jobs.rows import Row, RowError
from frontend.services.inference import InferenceService

from .test_predict_tasks import REFUSE, KindsTriton, _client, url


@pytest.fixture
def fake() -> KindsTriton:
    return KindsTriton()


@pytest.fixture
def api(tmp_path: Path, fake: KindsTriton) -> Iterator[TestClient]:
    client = _client(tmp_path, fake)
    yield client
    client.__exit__(None, None, None)


def job(model: str, version: str, task: str, **parameters: Any) -> JobRow:
    return JobRow(
        id="job_1",
        owner="o",
        account="acct",
        subject="key:1",
        tier="free",
        model=model,
        version=version,
        task=task,
        created_at=0.0,
        updated_at=0.0,
        parameters=parameters,
    )


def predict(api: TestClient, the_job: JobRow, texts: list[str]) -> list[Any]:
    services = services_of(api.app)  # type: ignore[arg-type]
    assert services is not None
    adapter = adapters_for(services.inference, services.settings)[the_job.task]
    rows = [Row(i + 1, text, {}) for i, text in enumerate(texts)]

    async def go() -> list[Any]:
        return await adapter.predict(the_job, rows, "job_1-0", Pacer(1))

    assert api.portal is not None
    return api.portal.call(go)


@pytest.mark.parametrize(
    ("model", "version", "task", "parameters"),
    [
        ("intent", "1", "text-classification", {"top_k": 2}),
        ("ner", "2", "token-classification", {}),
        ("summarize", "1", "summarization", {"max_sentences": 1}),
    ],
)
def test_predictions_are_the_predict_routes(api, fake, model, version, task, parameters):
    texts = [f"Ada met Charles in London. Text {i} is here, and longer." for i in range(11)]
    got = predict(api, job(model, version, task, **parameters), texts)
    calls = list(fake.calls)
    body = {"inputs": texts[:3], **parameters}
    sync = api.post(url(model), json=body, headers={"X-Model-Version": version})
    assert sync.status_code == 200, sync.text
    assert got[:3] == sync.json()["predictions"]
    assert len(got) == len(texts) and all(isinstance(p, dict) for p in got)
    # Sub-batches within the task's item cap (test_predict_tasks' limits), the version
    # as recorded, nothing from or into the cache (the sync call misses too).
    cap = {"intent": 8, "ner": 5, "summarize": 3}[model]
    assert [c[2] for c in calls] == [cap] * (11 // cap) + ([11 % cap] if 11 % cap else [])
    assert {c[1] for c in calls} == {version}
    assert fake.calls[len(calls) :] == [(model, version, 3)]


def test_embeddings_are_the_embedding_routes(api):
    texts = ["one text", "another text"]
    got = predict(api, job("embed", "1", "feature-extraction"), texts)
    sync = api.post("/v1/embeddings", json={"model": "embed", "input": texts}).json()
    assert [list(map(float, p["embedding"])) for p in got] == [d["embedding"] for d in sync["data"]]


def test_a_text_triton_refuses_is_that_rows_error(api, fake):
    texts = ["Ada is here.", f"{REFUSE} this one", "Charles too."]
    got = predict(api, job("ner", "2", "token-classification"), texts)
    assert isinstance(got[1], RowError) and got[1].number == 2
    assert got[1].code == "model_refused" and "not valid UTF-8" in got[1].reason
    assert [e["text"] for e in got[0]["entities"]] == ["Ada"]
    assert [e["text"] for e in got[2]["entities"]] == ["Charles"]
    assert [c[2] for c in fake.calls] == [3, 2]  # sent again without the refused text


def test_the_batch_service_mirrors_nothing_to_a_shadow_version(api, fake):
    put = {"default": "2", "shadow": {"version": "1", "percent": 100}}
    assert api.put("/v1/admin/routing/intent", json=put).status_code == 200
    services = services_of(api.app)  # type: ignore[arg-type]
    assert services is not None
    parts = (services.settings, services.catalog, services.triton, services.cache)
    rest = (services.router, services.routing_stats, services.metrics)
    batch = InferenceService(*parts, *rest, shadow=False)
    rows = [Row(1, "hello", {})]
    the_job = job("intent", "2", "text-classification")

    async def go(inference: InferenceService) -> None:
        adapter = adapters_for(inference, services.settings)["text-classification"]
        await adapter.predict(the_job, rows, "job_1-0", Pacer(1))
        await asyncio.gather(*inference._shadow_tasks)

    api.portal.call(go, batch)
    assert fake.calls == [("intent", "2", 1)]
    api.portal.call(go, services.inference)  # the online service does mirror it
    assert fake.calls[1:] == [("intent", "2", 1), ("intent", "1", 1)]
