"""The batch-jobs API through the real app (tests/unit/job_app.py: fake Triton, SQLite
file, temp storage): a JSON job runs to succeeded under the in-process executor and its
results are the synchronous predict route's predictions; listing pages; cancel; every
`{job_id}` route is 404 for another owner; the admins' listing; 422s for bad bodies; the
JobResponse schema."""

from __future__ import annotations

import orjson
import pytest
from starlette.routing import Route

from frontend.api import jobs as jobs_api
from frontend.schemas.jobs import JobList, JobResponse

from .job_app import job_app
from .test_frontend_errors import ADMIN_KEY, assert_envelope

TEXTS = [f"text number {n}" for n in range(1, 11)]


def _lines(body: bytes) -> list[dict]:
    return [orjson.loads(line) for line in body.splitlines() if line]


def test_a_json_job_runs_to_succeeded_and_equals_the_predict_route(tmp_path):
    with job_app(tmp_path) as app:
        rows = [*TEXTS[:5], *({"text": t, "id": i} for i, t in enumerate(TEXTS[5:]))]
        r = app.submit(
            {"model": "intent", "inputs": rows, "parameters": {"top_k": 2}, "columns": ["id"]}
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert r.headers["Location"] == f"/v1/jobs/{created['id']}"
        assert created["state"] == "queued" and created["version"] == "2"
        assert created["files"][0]["format"] == "jsonl" and created["task"] == (
            "text-classification"
        )
        online_calls = len(app.fake.calls)
        job = app.wait(created["id"])
        assert job["state"] == "succeeded", job
        progress = job["progress"]
        assert progress["rows_total"] == progress["rows_done"] == len(TEXTS)
        assert progress["rows_failed"] == 0 and progress["percent"] == 100.0
        assert progress["chunks_done"] == progress["chunks_total"] == 3  # chunk_rows 4
        # Every Triton request of the job carried the batch priority.
        assert app.fake.calls[online_calls:] and set(app.fake.priorities[online_calls:]) == {2}

        results = app.client.get(f"/v1/jobs/{created['id']}/results")
        assert results.status_code == 200, results.text
        lines = _lines(results.content)
        assert [line["row"] for line in lines] == list(range(1, len(TEXTS) + 1))
        assert [line["columns"].get("id") for line in lines[5:]] == [0, 1, 2, 3, 4]
        predictions = []
        for half in (TEXTS[:5], TEXTS[5:]):  # limits.max_batch_items is 8 here
            sync = app.client.post(
                "/v1/models/intent/predict",
                json={"inputs": half, "top_k": 2},
                headers={"Cache-Control": "no-cache"},
            )
            assert sync.status_code == 200, sync.text
            predictions += sync.json()["predictions"]
        assert [line["prediction"] for line in lines] == predictions
        assert set(app.fake.priorities[-1:]) == {0}  # the online request: default level
        errors = app.client.get(f"/v1/jobs/{created['id']}/errors")
        assert errors.status_code == 200 and errors.content == b""


def test_a_job_keeps_the_version_it_was_given(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        r = app.submit({"model": "intent", "version": "1", "inputs": ["hi"]})
        assert r.status_code == 201, r.text
        assert r.json()["version"] == "1"
        assert app.job(r.json()["id"])["version"] == "1"
        missing = app.submit({"model": "intent", "version": "9", "inputs": ["hi"]})
        assert_envelope(missing, 404, "version_not_found")


def test_listing_pages_newest_first_with_a_cursor(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        made = [app.submit({"model": "intent", "inputs": [f"t{n}"]}).json() for n in range(5)]
        expected = [j["id"] for j in sorted(made, key=lambda j: (j["created_at"], j["id"]))][::-1]
        seen, cursor, pages = [], None, 0
        while True:
            params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            r = app.client.get("/v1/jobs", params=params)
            assert r.status_code == 200, r.text
            page = JobList.model_validate(r.json())
            seen += [j.id for j in page.data]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == expected and pages == 3
        queued = app.client.get("/v1/jobs", params={"state": ["queued", "running"]}).json()
        assert len(queued["data"]) == 5
        assert app.client.get("/v1/jobs", params={"state": "failed"}).json()["data"] == []
        assert_envelope(
            app.client.get("/v1/jobs", params={"state": "done"}), 422, "validation_error"
        )
        bad = app.client.get("/v1/jobs", params={"cursor": "bm90LWEtY3Vyc29y"})
        assert_envelope(bad, 422, "validation_error")
        other = app.key("other")
        assert app.client.get("/v1/jobs", headers=app.as_key(other)).json()["data"] == []


def test_cancel_a_queued_job_then_again_and_a_finished_one(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        job_id = app.submit({"model": "intent", "inputs": ["a", "b"]}).json()["id"]
        r = app.client.delete(f"/v1/jobs/{job_id}")
        assert r.status_code == 202, r.text
        assert r.json()["state"] == "cancelled" and r.json()["finished_at"] is not None
        again = app.client.delete(f"/v1/jobs/{job_id}")
        assert again.status_code == 200 and again.json()["state"] == "cancelled"
    with job_app(tmp_path / "run") as app:
        job_id = app.submit({"model": "intent", "inputs": ["a"]}).json()["id"]
        assert app.wait(job_id)["state"] == "succeeded"
        assert_envelope(app.client.delete(f"/v1/jobs/{job_id}"), 409, "job_finished")


def _job_routes() -> list[tuple[str, str]]:
    found = []
    for route in jobs_api.router.routes:
        assert isinstance(route, Route)
        if "{job_id}" in route.path:
            found += [(method, route.path) for method in sorted(route.methods or ())]
    return found


def test_every_job_route_is_404_for_another_owner(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        owner, other = app.key("owner"), app.key("other")
        job_id = app.submit({"model": "intent", "inputs": ["mine"]}, key=owner).json()["id"]
        routes = _job_routes()
        assert {p for _, p in routes} >= {
            "/v1/jobs/{job_id}",
            "/v1/jobs/{job_id}/events",
            "/v1/jobs/{job_id}/results",
            "/v1/jobs/{job_id}/errors",
        }
        assert ("DELETE", "/v1/jobs/{job_id}") in routes
        for method, path in routes:
            url = path.replace("{job_id}", job_id)
            r = app.client.request(method, url, headers=app.as_key(other))
            assert_envelope(r, 404, "not_found")
            missing = app.client.request(
                method, path.replace("{job_id}", "job_nope"), headers=app.as_key(owner)
            )
            assert_envelope(missing, 404, "not_found")
        # Still there for its owner, and for an admin.
        assert app.job(job_id, owner)["state"] == "queued"
        assert app.job(job_id, ADMIN_KEY)["id"] == job_id


def test_the_admin_listing_is_for_admins_only(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        alice, bob = app.key("alice"), app.key("bob")
        a = app.submit({"model": "intent", "inputs": ["a"]}, key=alice).json()["id"]
        b = app.submit({"model": "embed", "inputs": ["b"]}, key=bob).json()["id"]
        assert_envelope(
            app.client.get("/v1/admin/jobs", headers=app.as_key(alice)), 403, "forbidden"
        )
        everyone = app.client.get("/v1/admin/jobs").json()
        assert {j["id"] for j in everyone["data"]} == {a, b}
        only_embed = app.client.get("/v1/admin/jobs", params={"model": "embed"}).json()
        assert [j["id"] for j in only_embed["data"]] == [b]
        assert [
            j["id"] for j in app.client.get("/v1/jobs", headers=app.as_key(alice)).json()["data"]
        ] == [a]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"inputs": ["x"]}, 422, "validation_error"),  # no model
        ({"model": "intent", "inputs": []}, 422, "validation_error"),
        ({"model": "intent", "inputs": ["x"], "colour": "red"}, 422, "validation_error"),
        ({"model": "intent", "inputs": [1]}, 422, "validation_error"),
        (
            {"model": "intent", "inputs": ["x"], "parameters": {"top_k": "2"}},
            422,
            "validation_error",
        ),
        ({"model": "intent", "inputs": ["x"], "parameters": {"top_k": 9}}, 422, "validation_error"),
        ({"model": "intent", "inputs": ["x"], "parameters": {"nope": 1}}, 422, "validation_error"),
        (
            {"model": "intent", "inputs": ["x"], "parameters": {"inputs": ["y"]}},
            422,
            "validation_error",
        ),
        ({"model": "embed", "inputs": ["x"], "parameters": {"top_k": 1}}, 422, "validation_error"),
        (
            {"model": "embed", "inputs": ["x"], "parameters": {"dimensions": 7}},
            422,
            "validation_error",
        ),
        (
            {"model": "summarize", "inputs": ["x"], "parameters": {"method": "poem"}},
            422,
            "validation_error",
        ),
        ({"model": "imagenet", "inputs": ["x"]}, 422, "validation_error"),
        ({"model": "nope", "inputs": ["x"]}, 404, "model_not_found"),
        (
            {"model": "intent", "inputs": ["x"], "metadata": {str(i): "v" for i in range(17)}},
            422,
            "validation_error",
        ),
        ({"model": "intent", "inputs": ["x"], "columns": ["a", "a"]}, 422, "validation_error"),
        ({"model": "intent", "inputs": ["x"] * 6}, 422, "validation_error"),  # max_inline_rows 5
    ],
)
def test_bad_bodies_are_refused_naming_the_field(tmp_path, body, status, code):
    with job_app(tmp_path, executor="off", max_inline_rows=5) as app:
        error = assert_envelope(app.submit(body), status, code)
        assert error["message"]
        assert app.client.get("/v1/admin/jobs").json()["data"] == []  # nothing was kept
        assert not any((tmp_path / "store" / "jobs").glob("*"))


def test_a_body_that_is_not_json_and_a_bad_idempotency_key_are_422(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        r = app.client.post(
            "/v1/jobs", content=b"model=intent", headers={"Content-Type": "text/plain"}
        )
        assert_envelope(r, 422, "validation_error")
        long_key = app.submit(
            {"model": "intent", "inputs": ["x"]}, **{"Idempotency-Key": "k" * 256}
        )
        error = assert_envelope(long_key, 422, "validation_error")
        assert error["param"] == "Idempotency-Key"


def test_a_key_scoped_to_other_models_cannot_submit(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        scoped = app.key("scoped", scopes={"models": ["embed"]})
        r = app.submit({"model": "intent", "inputs": ["x"]}, key=scoped)
        assert_envelope(r, 403, "out_of_scope")
        predict_only = app.key("predict-only", scopes={"routes": ["predict"]})
        assert_envelope(
            app.submit({"model": "embed", "inputs": ["x"]}, key=predict_only), 403, "out_of_scope"
        )


def test_the_job_response_schema_and_the_documented_bodies(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        r = app.submit({"model": "intent", "inputs": ["x"], "metadata": {"batch": "7"}})
        job = JobResponse.model_validate(r.json())
        assert job.object == "job" and job.metadata == {"batch": "7"}
        assert job.links.results == f"/v1/jobs/{job.id}/results"
        assert job.progress.rows_total is None and job.progress.eta_s is None
        assert job.id.startswith("job_") and len(job.id) == 30
        schema = app.client.get("/openapi.json").json()
        post = schema["paths"]["/v1/jobs"]["post"]
        assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
        assert "201" in post["responses"]
        ok = schema["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/JobResponse")
        assert {"/v1/jobs/{job_id}/events", "/v1/admin/jobs"} <= set(schema["paths"])
