"""Large uploads to `POST /v1/jobs` through the real server (`serve`, uvicorn, the upload
deadline, the streaming form reader): a 500 MB JSONL file is stored with its sha256 and
size while the server's peak RSS grows by less than 100 MiB, and an upload cut off
half-way leaves no temporary file, no input and no job row.

Jobs are accepted and held here, not run (`jobs.executor=off`): the figures are the
upload's alone."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from procs.wait import wait_for

from .stack import Stack, create_key, query, sqlite_url

pytestmark = pytest.mark.integration

FILE_BYTES = 500_000_000  # under the default cap, 500 MiB
BOUNDARY = "infergate-test-boundary-7d1f"
RSS_GROWTH_LIMIT = 100 << 20


def _block() -> bytes:
    """4 KiB of JSONL rows, repeated to make the file."""
    line = json.dumps({"text": "please book a table for two at eight tonight"}).encode() + b"\n"
    block = line * (4096 // len(line))
    return block + b" " * (4095 - len(block)) + b"\n"  # a blank line: skipped, not a row


def _head(name: str) -> bytes:
    fields = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nintent\r\n'
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
        f'name="file"; filename="{name}"\r\nContent-Type: application/x-ndjson\r\n\r\n'
    )
    return fields.encode()


TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def _file_parts(size: int) -> Iterator[bytes]:
    block = _block() * 256  # 1 MiB
    sent = 0
    while sent < size:
        piece = block[: size - sent]
        sent += len(piece)
        yield piece


def _vm_hwm(pid: int) -> int:
    """The process's peak resident set, in bytes (/proc/<pid>/status VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _stack(triton: Any, repository: Path, tmp: Path) -> Stack:
    env = {
        "INFERGATE_JOBS__STORAGE_DIR": str(tmp / "jobs"),
        "INFERGATE_JOBS__EXECUTOR": "off",
        "INFERGATE_JOBS__MIN_FREE_BYTES": "0",
    }
    return Stack(triton, repository, tmp, database_url=sqlite_url(tmp), env=env)


def _stored(tmp: Path) -> list[Path]:
    """Every file under the storage directory (temporary ones included)."""
    root = tmp / "jobs"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_500_mb_upload_is_stored_whole_in_bounded_memory(
    triton: Any, repository: Path, tmp_path: Path
) -> None:
    stack = _stack(triton, repository, tmp_path)
    try:
        key = create_key(stack.url)["key"]
        # Warm the route (imports, first allocations) before the baseline.
        small = _head("warm.jsonl") + _block() + TAIL
        r = httpx.post(
            stack.url + "/v1/jobs",
            headers={"X-API-Key": key, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=small,
            timeout=60,
        )
        assert r.status_code == 201, r.text
        before = _vm_hwm(stack.proc.pid)
        digest = hashlib.sha256()

        def body() -> Iterator[bytes]:
            yield _head("big.jsonl")
            for part in _file_parts(FILE_BYTES):
                digest.update(part)
                yield part
            yield TAIL

        length = len(_head("big.jsonl")) + FILE_BYTES + len(TAIL)
        started = time.monotonic()
        r = httpx.post(
            stack.url + "/v1/jobs",
            headers={
                "X-API-Key": key,
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "Content-Length": str(length),
            },
            content=body(),
            timeout=600,
        )
        seconds = time.monotonic() - started
        assert r.status_code == 201, r.text
        growth = _vm_hwm(stack.proc.pid) - before
        print(
            f"500 MB upload: {seconds:.1f} s ({FILE_BYTES / seconds / 1e6:.0f} MB/s), "
            f"peak RSS growth {growth / 2**20:.1f} MiB"
        )
        files = r.json()["files"]
        assert [(f["name"], f["bytes"], f["sha256"]) for f in files] == [
            ("big.jsonl", FILE_BYTES, digest.hexdigest())
        ]
        assert growth < RSS_GROWTH_LIMIT, f"peak RSS grew {growth / 2**20:.1f} MiB"
        stored = [p for p in _stored(tmp_path) if p.stat().st_size == FILE_BYTES]
        assert len(stored) == 1 and hashlib.sha256(stored[0].read_bytes()).hexdigest() == (
            digest.hexdigest()
        )
    finally:
        stack.stop()


def test_an_upload_cut_off_half_way_leaves_nothing(
    triton: Any, repository: Path, tmp_path: Path
) -> None:
    stack = _stack(triton, repository, tmp_path)
    try:
        key = create_key(stack.url)["key"]
        size = 250_000_000
        head = _head("cut.jsonl")
        request = (
            "POST /v1/jobs HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{stack.port}\r\n"
            f"X-API-Key: {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            # The whole body's length: the server expects twice what it will get.
            f"Content-Length: {len(head) + 2 * size + len(TAIL)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", stack.port), timeout=60) as sock:
            sock.sendall(request + head)
            for part in _file_parts(size):
                sock.sendall(part)
            # Some of it reached the storage directory before the cut.
            wait_for(lambda: bool(_stored(tmp_path)), "upload bytes on disk", 30)
        wait_for(lambda: not _stored(tmp_path), "the aborted upload's files removed", 5)
        assert query(stack.database_url, "SELECT count(*) FROM jobs") == [(0,)]
        assert query(stack.database_url, "SELECT count(*) FROM job_files") == [(0,)]
    finally:
        stack.stop()
