"""The storage interface of batch jobs, and the one rule every backend applies to keys.

Every call blocks (file or network I/O): the frontend calls them through
`anyio.to_thread.run_sync`, the job runner from its worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Final, Protocol

MAX_KEY_CHARS: Final = 1024


class BlobWriter(Protocol):
    """One object being written. Nothing is visible under its key until `commit`."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> int:
        """Makes the object durable, then publishes it under its key at once (a reader
        sees the whole object or none of it); returns its size in bytes."""
        ...

    def abort(self) -> None:
        """Drops what was written. Idempotent, and a no-op after `commit`."""
        ...


class Storage(Protocol):
    def writer(self, key: str) -> BlobWriter: ...

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        """A reader of bytes [start, end) of the object. Its positions are the object's own
        offsets (it starts at `start`; seek and tell stay within [start, end]), so that a
        chunk's recorded offsets can be used as they are. FileNotFoundError if absent."""
        ...

    def size(self, key: str) -> int: ...

    def delete_prefix(self, prefix: str) -> None:
        """Deletes every object whose key starts with `prefix` (`jobs/<id>/` for a job,
        a whole key for one object). Idempotent."""
        ...

    def sweep_temp(self, older_than_s: float) -> int:
        """Removes uncommitted writes left older than `older_than_s` (a writer killed
        before commit or abort); returns how many."""
        ...

    def job_prefixes(self) -> Iterator[tuple[str, float]]:
        """(job_id, last modification time) of every job with stored files: the retention
        sweep compares them with the database to find orphans."""
        ...

    def free_bytes(self) -> int:
        """Space left for new objects (what an unprivileged writer may still use)."""
        ...


def check_key(key: str, *, prefix: bool = False) -> list[str]:
    """The key's segments, or ValueError. Keys are relative, `/`-joined, without empty,
    `.` or `..` segments, NUL or backslashes, and no segment starts with a dot (the
    backend's own entries, such as `.tmp`, do). A prefix may end with `/`."""
    if not isinstance(key, str) or not key:
        raise ValueError("a storage key must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(f"storage key longer than {MAX_KEY_CHARS} characters")
    if "\x00" in key or "\\" in key:
        raise ValueError(f"storage key {key!r} holds a NUL or a backslash")
    if key.startswith("/"):
        raise ValueError(f"storage key {key!r} is absolute")
    parts = key.split("/")
    if prefix and parts[-1] == "":
        parts = parts[:-1]
    for part in parts:
        if part in ("", ".", "..") or part.startswith("."):
            raise ValueError(f"storage key {key!r} has an empty, relative or hidden segment")
    return parts
