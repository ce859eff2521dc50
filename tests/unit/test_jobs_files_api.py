"""File uploads to the batch-jobs API through the real app (tests/unit/job_app.py): a CSV
with a text column and carried columns runs to the end, downloads as JSONL and as CSV
(Range, ETag), streams its progress as SSE ending with `done`; bad files answer clearly
(415 for what is not CSV/JSONL by content, 422 for a wrong column or an empty file, row
errors for a field over the csv module's limit or bad UTF-8 — never a 500); idempotent
uploads replay the same job and another file with the key is 409."""

from __future__ import annotations

import csv
import io
import zipfile

import orjson

from .job_app import job_app
from .test_frontend_errors import ADMIN_KEY, assert_envelope

TEXTS = [f"review number {n}, quite good" for n in range(1, 8)]


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def _upload(app, files, key: str = ADMIN_KEY, headers=None, **fields):
    data = {"model": "intent", **fields}
    return app.client.post(
        "/v1/jobs", data=data, files=files, headers={"X-API-Key": key, **(headers or {})}
    )


def _lines(body: bytes) -> list[dict]:
    return [orjson.loads(line) for line in body.splitlines() if line]


def test_a_csv_upload_runs_and_downloads_as_jsonl_csv_and_ranges(tmp_path):
    body = _csv([["id", "review", "lang"], *([str(i), t, "en"] for i, t in enumerate(TEXTS))])
    with job_app(tmp_path) as app:
        r = _upload(
            app,
            {"file": ("reviews.csv", body, "text/csv")},
            text_field="review",
            columns='["id", "lang"]',
        )
        assert r.status_code == 201, r.text
        created = r.json()
        [stored] = created["files"]
        assert (stored["name"], stored["format"], stored["bytes"]) == (
            "reviews.csv",
            "csv",
            len(body),
        )
        import hashlib

        assert stored["sha256"] == hashlib.sha256(body).hexdigest()
        job = app.wait(created["id"])
        assert job["state"] == "succeeded", job
        assert job["progress"]["rows_done"] == len(TEXTS)

        jsonl = app.client.get(f"/v1/jobs/{created['id']}/results")
        assert jsonl.status_code == 200
        lines = _lines(jsonl.content)
        assert [line["row"] for line in lines] == list(range(1, len(TEXTS) + 1))
        assert [line["columns"] for line in lines] == [
            {"id": str(i), "lang": "en"} for i in range(len(TEXTS))
        ]
        sync = app.client.post(
            "/v1/models/intent/predict",
            json={"inputs": TEXTS},
            headers={"Cache-Control": "no-cache"},
        )
        assert [line["prediction"] for line in lines] == sync.json()["predictions"]

        as_csv = app.client.get(f"/v1/jobs/{created['id']}/results", headers={"Accept": "text/csv"})
        assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [row["id"] for row in table] == [str(i) for i in range(len(TEXTS))]
        assert [row["label"] for row in table] == [p["label"] for p in sync.json()["predictions"]]

        etag = jsonl.headers["etag"]
        again = app.client.get(f"/v1/jobs/{created['id']}/results", headers={"If-None-Match": etag})
        assert again.status_code == 304
        part = app.client.get(f"/v1/jobs/{created['id']}/results", headers={"Range": "bytes=5-24"})
        assert part.status_code == 206 and part.content == jsonl.content[5:25]

        events = app.client.get(f"/v1/jobs/{created['id']}/events")
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        names = [
            ln.split(":", 1)[1].strip()
            for ln in events.text.splitlines()
            if ln.startswith("event:")
        ]
        assert names[-1] == "done", events.text


def test_bad_files_answer_clearly(tmp_path):
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a.txt", "text,label\nhello,1\n")
    with job_app(tmp_path, executor="off") as app:
        r = _upload(app, {"file": ("rows.csv", zipped.getvalue(), "text/csv")})
        assert_envelope(r, 415, "unsupported_media_type")
        assert "rows.csv" in r.json()["error"]["message"]

        r = _upload(app, {"file": ("rows.csv", b"title,body\nx,y\n", "text/csv")})
        assert_envelope(r, 422, "validation_error")
        assert "column 'text' is not in the header" in r.json()["error"]["message"]

        r = _upload(
            app,
            {"file": ("rows.csv", b"text,body\nx,y\n", "text/csv")},
            columns='["missing"]',
        )
        assert_envelope(r, 422, "validation_error")
        assert "'missing'" in r.json()["error"]["message"]

        r = _upload(app, {"file": ("empty.jsonl", b"", "application/x-ndjson")})
        assert_envelope(r, 422, "validation_error")
        assert "empty" in r.json()["error"]["message"]

        r = _upload(app, {"file": ("utf16.csv", "text\nhi\n".encode("utf-16"), "text/csv")})
        assert_envelope(r, 415, "unsupported_media_type")

    # Rows that cannot be read are row errors; the other rows run.
    big = "x" * (csv.field_size_limit() + 10)
    body = b"text\nfine one\n" + f'"{big}"\n'.encode() + b"\xff\xfe broken\nfine two\n"
    with job_app(tmp_path / "run") as app:
        r = _upload(app, {"file": ("rows.csv", body, "text/csv")})
        assert r.status_code == 201, r.text
        job = app.wait(r.json()["id"])
        assert job["state"] == "succeeded", job
        assert (job["progress"]["rows_done"], job["progress"]["rows_failed"]) == (2, 2)
        errors = _lines(app.client.get(f"/v1/jobs/{job['id']}/errors").content)
        assert [e["row"] for e in errors] == [2, 3]
        reasons = " | ".join(e["reason"] for e in errors)
        assert "limit" in reasons and "UTF-8" in reasons, reasons
        results = _lines(app.client.get(f"/v1/jobs/{job['id']}/results").content)
        assert [line["row"] for line in results] == [1, 4]


def test_idempotent_uploads_replay_and_another_file_is_409(tmp_path):
    body = b'{"text": "one"}\n{"text": "two"}\n'
    with job_app(tmp_path, executor="off") as app:
        key = {"Idempotency-Key": "upload-1"}
        first = _upload(app, {"file": ("a.jsonl", body, "application/x-ndjson")}, headers=key)
        assert first.status_code == 201, first.text
        twin = _upload(app, {"file": ("a.jsonl", body, "application/x-ndjson")}, headers=key)
        assert twin.status_code == 200, twin.text
        assert twin.headers["Idempotent-Replayed"] == "true"
        assert twin.json()["id"] == first.json()["id"]
        other = _upload(
            app,
            {"file": ("a.jsonl", body + b'{"text": "3"}\n', "application/x-ndjson")},
            headers=key,
        )
        assert_envelope(other, 409, "idempotency_key_reused")
        listed = app.client.get("/v1/jobs").json()["data"]
        assert [j["id"] for j in listed] == [first.json()["id"]]
