"""The multipart side of a job upload (frontend/jobs/upload.py): python-multipart's
callbacks (`Parts`), which only sort the body into plain fields and file parts and check
each limit the moment it is crossed, and one `Sink` per file part, which keeps the file's
first bytes (to sniff its content and read a CSV header), counts its newlines and hands
what is pending to a writer thread that hashes and stores it. Nothing here awaits: the
coroutine in upload.py settles the sinks after each slice of the body."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from python_multipart.multipart import parse_options_header

from ..db.job_types import JobFileRow
from ..errors import BadRequest, InputInvalid, PayloadTooLarge, UnsupportedMediaType
from ..job_settings import JobSettings
from ..storage.base import BlobWriter
from . import rows, sniff

FILE_FIELD: Final = "file"
FIELDS: Final = frozenset(
    {"model", "version", "text_field", "columns", "parameters", "metadata", "notify"}
)
MAX_FIELD_BYTES: Final = 8 << 10
MAX_PART_HEAD_BYTES: Final = 16 << 10  # a part's own headers (the body cap is gigabytes)
MAX_NAME_CHARS: Final = 255
SNIFF_BYTES: Final = 8 << 10  # what sniff.check decides from
HEAD_BYTES: Final = 64 << 10  # kept per file: the CSV header must end within it
# Part Content-Types that name a format: checked against the content (others say nothing).
PART_TYPES: Final[dict[bytes, sniff.Format]] = {
    b"text/csv": "csv",
    b"application/x-ndjson": "jsonl",
    b"application/jsonl": "jsonl",
    b"application/x-jsonlines": "jsonl",
}


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One committed input file."""

    index: int  # 0-based, the order of the parts
    name: str  # the client's file name: basename, printable, ≤ 255 characters
    format: Literal["jsonl", "csv"]
    bytes: int
    sha256: str  # hex
    storage_key: str  # jobs/<job_id>/inputs/<index>.<format>
    rows_estimate: int  # from the newlines (admission's estimate; planning settles it)
    header: list[str] | None  # a CSV file's header, None for JSONL

    def as_row(self) -> JobFileRow:
        return JobFileRow(
            idx=self.index,
            name=self.name,
            format=self.format,
            bytes=self.bytes,
            sha256=self.sha256,
            storage_key=self.storage_key,
            header=self.header,
        )


@dataclass(frozen=True, slots=True)
class FieldsOk:
    """What `on_fields` returns: what the files' CSV headers are checked against."""

    text_field: str
    columns: list[str] | None


def file_name(raw: bytes, index: int) -> str:
    """A part's file name as stored and echoed: its last path segment (browsers on Windows
    send whole paths), printable characters only, at most MAX_NAME_CHARS."""
    base = raw.replace(b"\\", b"/").rsplit(b"/", 1)[-1].decode("utf-8", "replace")
    name = "".join(c for c in base if c.isprintable())[:MAX_NAME_CHARS]
    return name or f"{FILE_FIELD}.{index}"


@dataclass(eq=False)
class Sink:
    """One file part on its way to storage."""

    index: int
    name: str
    part_type: sniff.Format | None  # what its Content-Type claims, if it names a format
    max_bytes: int
    sha256: Any = field(default_factory=hashlib.sha256)
    received: int = 0
    head: bytearray = field(default_factory=bytearray)
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    written: int = 0
    newlines: int = 0
    ends_with_newline: bool = False
    format: sniff.Format | None = None
    header: list[str] | None = None
    header_checked: bool = False
    ended: bool = False
    writer: BlobWriter | None = None
    stored: StoredFile | None = None

    @property
    def where(self) -> str:
        return f"{FILE_FIELD}.{self.index}"

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.received += len(data)
        self.ends_with_newline = data.endswith(b"\n")
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.pending.append(data)
        self.pending_bytes += len(data)

    def inspect(self, ok: FieldsOk) -> None:
        """The checks its bytes so far allow; raises the refusal."""
        if self.received > self.max_bytes:
            raise PayloadTooLarge(
                f"{self.where} ({self.name!r}) is over the limit of {self.max_bytes} bytes "
                "per file",
                details={"item": self.where, "file": self.name, "limit_bytes": self.max_bytes},
                param=self.where,
            )
        if self.format is None and (self.ended or len(self.head) >= SNIFF_BYTES):
            complete = self.ended and self.received <= SNIFF_BYTES
            self.format = sniff.check(bytes(self.head[:SNIFF_BYTES]), complete, self.name)
            if self.part_type is not None and self.part_type != self.format:
                raise UnsupportedMediaType(
                    f"file '{self.name}' is sent as {self.part_type} (its part's "
                    f"Content-Type) but holds {self.format}",
                    details={"file": self.name, "found": self.format, "declared": self.part_type},
                )
        headed = self.ended or len(self.head) >= HEAD_BYTES
        if self.format == "csv" and not self.header_checked and headed:
            complete = self.ended and self.received <= HEAD_BYTES
            self.header = rows.csv_header(
                bytes(self.head), ok.text_field, ok.columns, complete=complete
            )
            self.header_checked = True

    def take(self) -> list[bytes]:
        pieces, self.pending, self.pending_bytes = self.pending, [], 0
        return pieces

    def write(self, pieces: list[bytes], open_writer: Callable[[], BlobWriter]) -> None:
        """Blocking (a worker thread): hashes, counts and writes `pieces`."""
        if self.writer is None:
            self.writer = open_writer()
        for piece in pieces:
            self.sha256.update(piece)  # releases the GIL above 2 KiB
            self.newlines += piece.count(b"\n")
            self.writer.write(piece)
            self.written += len(piece)


class Parts:
    """The parser's callbacks: one part at a time, synchronous and cheap."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.fields: dict[str, str] = {}
        self.sinks: list[Sink] = []
        self.ok: FieldsOk | None = None  # set once on_fields has answered
        self.ended = False
        self._head_name = bytearray()
        self._head_value = bytearray()
        self._head_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._sink: Sink | None = None
        self._field: str | None = None
        self._value = bytearray()

    def on_part_begin(self) -> None:
        self._headers, self._head_bytes = {}, 0
        self._sink, self._field, self._value = None, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._head_name += data[start:end]
        self._count_head(end - start)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._head_value += data[start:end]
        self._count_head(end - start)

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_PART_HEAD_BYTES:
            raise BadRequest(f"a multipart part's headers exceed {MAX_PART_HEAD_BYTES} bytes")

    def on_header_end(self) -> None:
        self._headers[bytes(self._head_name).lower()] = bytes(self._head_value)
        self._head_name, self._head_value = bytearray(), bytearray()

    def on_headers(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise BadRequest("a multipart part has no name (Content-Disposition: form-data)")
        name = options[b"name"].decode("utf-8", "replace")
        is_file = b"filename" in options
        if name == FILE_FIELD:
            self._open_file(options[b"filename"] if is_file else None)
        elif name in FIELDS:
            if is_file or name in self.fields:
                why = "must be a plain field, not a file" if is_file else "is given twice"
                raise invalid(name, f"{name}: {why}", why)
            if self.sinks:
                raise invalid(
                    name,
                    f"{name}: fields must come before files (send every plain field, then "
                    f"the {FILE_FIELD} parts)",
                    "fields must come before files",
                )
            self._field = name
        else:
            safe = "".join(c for c in name if c.isprintable())[:MAX_NAME_CHARS]
            raise InputInvalid(
                f"body.{safe}: Extra inputs are not permitted",
                details=[
                    {
                        "loc": ["body", safe],
                        "msg": "Extra inputs are not permitted",
                        "type": "extra_forbidden",
                    }
                ],
            )

    def _open_file(self, raw_name: bytes | None) -> None:
        if raw_name is None:
            why = "not a file (its Content-Disposition has no filename)"
            raise invalid(FILE_FIELD, f"{FILE_FIELD}: a {FILE_FIELD} part must be a file", why)
        limit = self.settings.max_files
        if len(self.sinks) >= limit:
            raise InputInvalid(
                f"{FILE_FIELD}: more than {limit} files; the limit is {limit} per job",
                details=[{"loc": ["body", FILE_FIELD], "msg": "too many items", "limit": limit}],
            )
        kind, _ = parse_options_header(self._headers.get(b"content-type", b""))
        index = len(self.sinks)
        self._sink = Sink(
            index,
            file_name(raw_name, index),
            PART_TYPES.get(kind.lower()),
            self.settings.max_file_bytes,
        )
        self.sinks.append(self._sink)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:
            self._sink.feed(data[start:end])
            if self.ok is not None:
                self._sink.inspect(self.ok)
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            why = f"longer than {MAX_FIELD_BYTES} bytes"
            raise invalid(self._field or "", f"{self._field}: {why}", why)

    def on_part_end(self) -> None:
        if self._sink is not None:
            self._sink.ended = True
            if self.ok is not None:
                self._sink.inspect(self.ok)
        elif self._field is not None:
            try:
                self.fields[self._field] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid(self._field, f"{self._field}: not UTF-8", "not UTF-8") from None

    def on_end(self) -> None:
        self.ended = True


def invalid(name: str, message: str, why: str) -> InputInvalid:
    return InputInvalid(message, details=[{"loc": ["body", name], "msg": why}])
