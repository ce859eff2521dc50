"""Schemas of the batch-jobs routes (design §6): the JSON submission, a job's status, a
page of jobs. A multipart submission carries the same names as plain fields (`columns`,
`parameters` and `metadata` as JSON text) and its files as `file` parts; the service
checks those fields with the same models (`JobFields`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, JsonValue, field_validator

from .common import Strict
from .webhooks import JobNotification, JobNotify, JobNotifyShown

JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelling", "cancelled"]
MAX_COLUMNS = 64
MAX_METADATA_KEYS = 16
MAX_METADATA_VALUE = 512
MAX_METADATA_BYTES = 4096
# The job's field names: a CSV header name or a JSON key, never a path.
FieldName = Annotated[str, Field(min_length=1, max_length=128)]
MetadataValue = Annotated[str, Field(max_length=MAX_METADATA_VALUE)]


def _check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return value
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} keys")
    if any(not 1 <= len(key) <= 64 for key in value):
        raise ValueError("keys are 1 to 64 characters")
    encoded = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
    if encoded > MAX_METADATA_BYTES:
        raise ValueError(f"at most {MAX_METADATA_BYTES} bytes in all")
    return value


def _check_columns(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("column names must be unique")
    return value


class JobFields(Strict):
    """What every submission says besides its rows (the JSON body's other fields, or a
    multipart body's plain fields)."""

    model: str = Field(min_length=1, max_length=128, examples=["intent"])
    version: str | None = Field(
        None, min_length=1, max_length=16, description="Default: routing picks it, once"
    )
    text_field: FieldName = Field(
        "text", description="The JSON key or CSV column holding each row's text"
    )
    columns: list[FieldName] | None = Field(
        None,
        max_length=MAX_COLUMNS,
        description="Input fields carried into the results (default: the CSV's other "
        "columns; none for JSONL)",
    )
    parameters: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="The task's own parameters, applied to every row (classification: "
        "top_k, return_all_scores; summarization: method, max_sentences, max_tokens; "
        "embeddings: dimensions, encoding_format)",
        examples=[{"top_k": 2}],
    )
    metadata: dict[str, MetadataValue] | None = Field(
        None, description=f"Yours, shown back (at most {MAX_METADATA_KEYS} keys)"
    )
    notify: JobNotify | None = Field(
        None,
        description="A callback URL and/or an e-mail when the job ends (your webhooks "
        "are told as well)",
    )

    _metadata = field_validator("metadata")(_check_metadata)
    _columns = field_validator("columns")(_check_columns)


class JobRequest(JobFields):
    """A job whose rows are in the body: each a text, or an object holding `text_field`
    (its other keys are carried into the results when `columns` names them)."""

    inputs: list[str | dict[str, JsonValue]] = Field(
        min_length=1,
        description="The rows (at most jobs.max_inline_rows, 10 000 by default)",
        examples=[["how do I renew my policy?", {"text": "thanks!", "id": 7}]],
    )


class JobFile(BaseModel):
    name: str
    format: Literal["jsonl", "csv"]
    bytes: int
    sha256: str
    rows: int | None = Field(description="Known once the job is planned")
    first_row: int | None = Field(description="Global, 1-based row number of its first row")


class JobProgress(BaseModel):
    rows_total: int | None
    rows_done: int
    rows_failed: int
    chunks_total: int | None
    chunks_done: int
    rows_per_s: float | None
    eta_s: float | None
    percent: float | None


class JobLinks(BaseModel):
    self: str
    events: str
    results: str
    errors: str


class JobResponse(BaseModel):
    id: str
    object: Literal["job"] = "job"
    model: str
    version: str
    task: str
    state: JobStateName
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    progress: JobProgress
    files: list[JobFile]
    parameters: dict[str, Any]
    metadata: dict[str, str] | None
    waiting: dict[str, Any] | None = Field(
        description='Why it makes no progress now: {"reason", "until"}'
    )
    error: dict[str, Any] | None = Field(description='{"code", "message"} when failed')
    notify: JobNotifyShown | None = Field(
        None, description="The job's own notifications (the callback secret: at submission)"
    )
    notifications: list[JobNotification] | None = Field(
        None, description="GET /v1/jobs/{id} only: each delivery of the job's events"
    )
    links: JobLinks


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobResponse]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")
