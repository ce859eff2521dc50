"""Job files under one local directory (a volume every worker mounts at the same path).

Layout: `<root>/<key>` for committed objects, `<root>/.tmp/<uuid>` while a writer is
open. A commit is fsync of the file, `os.replace` into the key (atomic on POSIX: a reader
opens the old name, the new file or nothing, never a partial file), then fsync of the
directory so that the rename survives a power cut. Directories are 0700, files 0600:
inputs are clients' data.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final, cast

from .base import check_key

TMP: Final = ".tmp"
_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    def __init__(self, root: Path, fsync: bool = True) -> None:
        """`fsync=False` skips the flushes to disk (tests, throwaway deployments); commits
        stay atomic."""
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.root, _DIR_MODE)
        self.tmp = self.root / TMP
        self.tmp.mkdir(mode=_DIR_MODE, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def writer(self, key: str) -> LocalWriter:
        return LocalWriter(self, self._path(key))

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        raw = open(self._path(key), "rb", buffering=0)  # noqa: SIM115 (the caller closes it)
        try:
            size = os.fstat(raw.fileno()).st_size
            if not 0 <= start <= end <= size:
                raise ValueError(f"range [{start}, {end}) is not within {key!r} ({size} bytes)")
            return cast(BinaryIO, io.BufferedReader(_Window(raw, start, end)))
        except BaseException:
            raw.close()
            raise

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete_prefix(self, prefix: str) -> None:
        parts = check_key(prefix, prefix=True)
        if prefix.endswith("/"):
            shutil.rmtree(self.root.joinpath(*parts), ignore_errors=True)
            return
        folder, stem = self.root.joinpath(*parts[:-1]), parts[-1]
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith(stem):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    Path(entry.path).unlink(missing_ok=True)

    def sweep_temp(self, older_than_s: float) -> int:
        # A live writer keeps its file's mtime fresh with every write: only the leftovers
        # of killed processes get this old.
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in os.scandir(self.tmp):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    Path(entry.path).unlink()
                    removed += 1
            except FileNotFoundError:  # its writer committed or aborted meanwhile
                continue
        return removed

    def job_prefixes(self) -> Iterator[tuple[str, float]]:
        try:
            entries = list(os.scandir(self.root / "jobs"))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield entry.name, entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:  # deleted by a concurrent sweep
                continue

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _makedirs(self, folder: Path) -> None:
        """Creates the missing directories down to `folder`, each made durable in its
        parent (a committed file in a directory that vanishes on a power cut is lost)."""
        missing: list[Path] = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            try:
                path.mkdir(mode=_DIR_MODE)
            except FileExistsError:  # another writer made it
                continue
            if self.fsync:
                _fsync_dir(path.parent)


class LocalWriter:
    """Writes into `.tmp/<uuid>`; `commit` moves it to the key."""

    def __init__(self, storage: LocalStorage, target: Path) -> None:
        self._storage, self._target = storage, target
        self._tmp = storage.tmp / uuid.uuid4().hex
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        self._file: io.BufferedWriter | None = os.fdopen(fd, "wb")
        self._size = 0
        self._committed = False

    @property
    def temp_path(self) -> Path:
        return self._tmp

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("write after commit or abort")
        self._file.write(data)
        self._size += len(data)

    def commit(self) -> int:
        if self._file is None:
            raise ValueError("commit after commit or abort")
        try:
            self._file.flush()
            if self._storage.fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            self._storage._makedirs(self._target.parent)
            os.replace(self._tmp, self._target)
            self._committed = True
            if self._storage.fsync:
                _fsync_dir(self._target.parent)
        except BaseException:
            self.abort()
            raise
        return self._size

    def abort(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):  # a failed flush: the temp goes anyway
                file.close()
        if not self._committed:
            self._tmp.unlink(missing_ok=True)


class _Window(io.RawIOBase):
    """Bytes [start, end) of a file, at the file's own offsets."""

    def __init__(self, raw: io.FileIO, start: int, end: int) -> None:
        self._raw, self._start, self._end, self._pos = raw, start, end, start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        pos = base + offset
        if not self._start <= pos <= self._end:
            raise ValueError(f"position {pos} is outside [{self._start}, {self._end}]")
        self._pos = pos
        return pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._end - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._raw.fileno(), want, self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
