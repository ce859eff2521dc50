"""multipart/form-data image uploads, parsed (python-multipart) as the body arrives.

Why not Starlette's `request.form()`: it spools every file to a temporary file and only
then lets the caller look at sizes and counts, and its refusals are 400s in its own words.
Here each limit is checked the moment it is crossed, in this API's errors: the file that
goes over the per-file cap is refused (413, naming it) before the rest of the body is
read, the file after the last allowed one likewise (422), a field the request does not
have at its header (422, as a JSON body's extra field is). The whole body is bounded
before this runs (the body guard's cap for image requests), so holding the files in
memory is bounded too: they go to Triton as they are, in one request.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from ..errors import BadRequest, InputInvalid, PayloadTooLarge

MAX_FIELD_BYTES = 64  # a plain field here is a number (top_k)
MAX_NAME_CHARS = 255  # a file name as echoed in answers and errors


@dataclass
class Upload:
    index: int  # among the request's files, from 0
    filename: str
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Form:
    files: list[Upload]
    fields: dict[str, str]


def safe_name(raw: bytes) -> str:
    """A part's file name as the API echoes it: UTF-8 (undecodable bytes replaced),
    without control characters, at most MAX_NAME_CHARS characters."""
    text = raw.decode("utf-8", "replace")
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    return text[:MAX_NAME_CHARS]


class _Parts:
    """The parser's callbacks: one part at a time, each limit checked as it is crossed."""

    def __init__(self, file_field: str, fields: frozenset[str], max_files: int, max_bytes: int):
        self.file_field, self.field_names = file_field, fields
        self.max_files, self.max_bytes = max_files, max_bytes
        self.files: list[Upload] = []
        self.fields: dict[str, str] = {}
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._file: Upload | None = None
        self._field: str | None = None
        self._value = bytearray()

    def on_part_begin(self) -> None:
        self._disposition, self._file, self._field = b"", None, None
        self._value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name, self._header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise BadRequest("a multipart part has no name (Content-Disposition: form-data)")
        name = safe_name(options[b"name"])
        is_file = b"filename" in options
        if name == self.file_field:
            if not is_file:
                raise InputInvalid(
                    f"{name}: a {name} part must be a file (its Content-Disposition has no "
                    "filename)",
                    details=[{"loc": ["body", name], "msg": "not a file"}],
                )
            if len(self.files) >= self.max_files:
                raise InputInvalid(
                    f"{name}: more than {self.max_files} files; the limit is "
                    f"{self.max_files} per request",
                    details=[
                        {"loc": ["body", name], "msg": "too many items", "limit": self.max_files}
                    ],
                )
            self._file = Upload(len(self.files), safe_name(options[b"filename"]))
            self.files.append(self._file)
        elif name in self.field_names:
            if is_file or name in self.fields:
                why = "must be a plain field, not a file" if is_file else "is given twice"
                raise InputInvalid(f"{name}: {why}", details=[{"loc": ["body", name], "msg": why}])
            self._field = name
        else:
            raise InputInvalid(
                f"body.{name}: Extra inputs are not permitted",
                details=[
                    {
                        "loc": ["body", name],
                        "msg": "Extra inputs are not permitted",
                        "type": "extra_forbidden",
                    }
                ],
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            upload = self._file
            upload.data += data[start:end]
            if len(upload.data) > self.max_bytes:
                where = f"{self.file_field}.{upload.index}"
                raise PayloadTooLarge(
                    f"{where} ({upload.filename!r}) is over the limit of {self.max_bytes} "
                    "bytes per image",
                    details={"item": where, "file": upload.filename, "limit_bytes": self.max_bytes},
                    param=where,
                )
        else:
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise InputInvalid(
                    f"{self._field}: longer than {MAX_FIELD_BYTES} bytes",
                    details=[{"loc": ["body", self._field], "msg": "too long"}],
                )

    def on_part_end(self) -> None:
        if self._field is not None:
            self.fields[self._field] = self._value.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True


async def read_form(
    request: Request,
    *,
    file_field: str,
    fields: frozenset[str],
    max_files: int,
    max_file_bytes: int,
) -> Form:
    """The files sent as `file_field` parts (at least one) and the plain `fields` given."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("a multipart/form-data body needs a boundary in its Content-Type")
    parts = _Parts(file_field, fields, max_files, max_file_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": parts.on_part_begin,
            "on_part_data": parts.on_part_data,
            "on_part_end": parts.on_part_end,
            "on_header_field": parts.on_header_field,
            "on_header_value": parts.on_header_value,
            "on_header_end": parts.on_header_end,
            "on_headers_finished": parts.on_headers_finished,
            "on_end": parts.on_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
    except FormParserError:
        raise BadRequest("the body is not valid multipart/form-data") from None
    if not parts.ended:
        raise BadRequest("the multipart/form-data body ends before its closing boundary")
    if not parts.files:
        raise InputInvalid(
            f"{file_field}: no files; send each image as a {file_field} part",
            details=[{"loc": ["body", file_field], "msg": "no files"}],
        )
    return Form(parts.files, parts.fields)
