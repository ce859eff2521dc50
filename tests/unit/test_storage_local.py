"""LocalStorage (frontend/storage/local.py): atomic commits, aborts, temp sweeps, Range
reads at exact offsets, and keys that cannot leave the root."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from frontend.storage import LocalStorage, Storage, check_key

KEY = "jobs/job_a/inputs/0.csv"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "jobs-root")


def put(storage: Storage, key: str, data: bytes) -> int:
    writer = storage.writer(key)
    writer.write(data)
    return writer.commit()


def test_is_a_storage_and_root_is_private(tmp_path: Path):
    root = tmp_path / "deep" / "root"
    store: Storage = LocalStorage(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    put(store, KEY, b"x")
    assert stat.S_IMODE((root / "jobs" / "job_a").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / KEY).stat().st_mode) == 0o600


def test_commit_publishes_the_whole_file_and_returns_its_size(storage: LocalStorage):
    writer = storage.writer(KEY)
    writer.write(b"id,text\n")
    writer.write(b"1,hello\n")
    assert not (storage.root / KEY).exists()  # nothing under the key before commit
    assert writer.temp_path.parent == storage.root / ".tmp"
    assert writer.commit() == 16
    assert (storage.root / KEY).read_bytes() == b"id,text\n1,hello\n"
    assert not writer.temp_path.exists()
    assert storage.size(KEY) == 16
    writer.abort()  # after commit: a no-op, the file stays
    assert storage.size(KEY) == 16
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_a_reader_never_sees_a_partial_file(tmp_path: Path):
    storage = LocalStorage(tmp_path, fsync=False)
    piece, pieces = b"r" * 65536, 64
    total = len(piece) * pieces
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        path = storage.root / "jobs/j/results/000000-abcd.jsonl"
        while not stop.is_set():
            try:
                with open(path, "rb") as f:
                    seen.append(len(f.read()))
            except FileNotFoundError:
                seen.append(-1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for round_ in range(5):
            writer = storage.writer("jobs/j/results/000000-abcd.jsonl")
            for _ in range(pieces):
                writer.write(piece)
                time.sleep(0)
            assert writer.commit() == total
            if round_ == 0:
                time.sleep(0.01)
    finally:
        stop.set()
        watcher.join()
    assert set(seen) <= {-1, total}, sorted(set(seen))
    assert total in seen


def test_replacing_a_key_is_atomic_too(storage: LocalStorage):
    put(storage, KEY, b"old")
    writer = storage.writer(KEY)
    writer.write(b"new contents")
    assert storage.size(KEY) == 3
    writer.commit()
    assert (storage.root / KEY).read_bytes() == b"new contents"


def test_abort_removes_the_temp_and_is_idempotent(storage: LocalStorage):
    writer = storage.writer(KEY)
    writer.write(b"partial")
    assert writer.temp_path.exists()
    writer.abort()
    writer.abort()
    assert not writer.temp_path.exists()
    assert not (storage.root / KEY).exists()
    assert list((storage.root / ".tmp").iterdir()) == []
    with pytest.raises(ValueError):
        writer.commit()


def test_a_failed_commit_leaves_no_temp(storage: LocalStorage):
    (storage.root / "jobs").write_bytes(b"a file where a directory must go")
    writer = storage.writer(KEY)
    writer.write(b"data")
    with pytest.raises(OSError):
        writer.commit()
    assert not writer.temp_path.exists()


def test_sweep_temp_removes_only_old_temps(storage: LocalStorage):
    old, fresh = storage.writer("jobs/a/x"), storage.writer("jobs/a/y")
    old.write(b"left by a killed process")
    fresh.write(b"being written")
    past = time.time() - 7200
    os.utime(old.temp_path, (past, past))
    put(storage, "jobs/a/z", b"committed")
    assert storage.sweep_temp(3600) == 1
    assert not old.temp_path.exists()
    assert fresh.temp_path.exists()
    assert storage.size("jobs/a/z") == 9
    fresh.write(b", still")
    assert fresh.commit() == len(b"being written, still")
    old.abort()  # its temp is gone already: still fine
    assert storage.sweep_temp(0) == 0


@pytest.mark.parametrize("segment", [4093, 65535, 65536, 65537, 100_000, 204_800])
def test_open_range_reads_exactly_the_range(storage: LocalStorage, segment: int):
    data = bytes(range(256)) * 800  # 204 800 bytes
    put(storage, KEY, data)
    for start in range(0, len(data) + 1, segment):
        end = min(start + segment, len(data))
        with storage.open_range(KEY, start, end) as f:
            assert f.tell() == start  # the file's own offsets
            assert f.read() == data[start:end]
            assert f.read() == b""
    with storage.open_range(KEY, 10, 20) as f:
        assert f.read(4) == data[10:14]
        f.seek(18)
        assert f.read(100) == data[18:20]
        f.seek(-3, os.SEEK_END)
        assert f.read() == data[17:20]
        with pytest.raises(ValueError):
            f.seek(9)


def test_open_range_at_line_boundaries_for_readline(storage: LocalStorage):
    data = b"".join(b"line %d\n" % i for i in range(1000))
    put(storage, KEY, data)
    cut = data.index(b"line 500\n")
    with storage.open_range(KEY, cut, len(data)) as f:
        assert f.readline() == b"line 500\n"
        assert f.tell() == cut + 9
    with storage.open_range(KEY, 0, cut) as f:
        assert f.read().splitlines()[-1] == b"line 499"


def test_open_range_refuses_ranges_outside_the_file(storage: LocalStorage):
    put(storage, KEY, b"0123456789")
    with storage.open_range(KEY, 10, 10) as f:
        assert f.read() == b""
    for start, end in [(-1, 3), (5, 4), (0, 11)]:
        with pytest.raises(ValueError):
            storage.open_range(KEY, start, end)
    with pytest.raises(FileNotFoundError):
        storage.open_range("jobs/none/inputs/0.csv", 0, 0)


def test_delete_prefix(storage: LocalStorage):
    for key in [
        "jobs/a/inputs/0.csv",
        "jobs/a/results/000001-aaaa.jsonl",
        "jobs/a/results/000001-bbbb.jsonl",
        "jobs/a/results/000002-cccc.jsonl",
        "jobs/ab/inputs/0.csv",
    ]:
        put(storage, key, b"x")
    storage.delete_prefix("jobs/a/results/000001-aaaa")  # one chunk's losing file
    assert not (storage.root / "jobs/a/results/000001-aaaa.jsonl").exists()
    assert (storage.root / "jobs/a/results/000001-bbbb.jsonl").exists()
    storage.delete_prefix("jobs/a/")  # a whole job, not its namesake prefix
    assert not (storage.root / "jobs/a").exists()
    assert storage.size("jobs/ab/inputs/0.csv") == 1
    storage.delete_prefix("jobs/a/")  # idempotent
    storage.delete_prefix("jobs/zz/results/0000")
    assert [name for name, _ in storage.job_prefixes()] == ["ab"]


def test_job_prefixes_and_free_bytes(storage: LocalStorage):
    assert list(storage.job_prefixes()) == []
    put(storage, "jobs/job_1/inputs/0.jsonl", b"{}")
    put(storage, "jobs/job_2/inputs/0.jsonl", b"{}")
    found = dict(storage.job_prefixes())
    assert set(found) == {"job_1", "job_2"}
    assert all(abs(mtime - time.time()) < 60 for mtime in found.values())
    assert storage.free_bytes() > 0


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../outside",
        "jobs/../../outside",
        "jobs/./a",
        "jobs//a",
        "jobs/a/",
        "jobs/a\x00b",
        "jobs\\a",
        ".tmp/abc",
        "jobs/.hidden",
        "x" * 1025,
    ],
)
def test_bad_keys_are_refused(storage: LocalStorage, key: str):
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        storage.writer(key)
    with pytest.raises(ValueError):
        storage.size(key)
    with pytest.raises(ValueError):
        storage.open_range(key, 0, 0)
    if not key.endswith("/"):
        with pytest.raises(ValueError):
            storage.delete_prefix(key)
    assert list((storage.root / ".tmp").iterdir()) == []


def test_prefixes_may_end_with_a_slash_but_not_be_empty(storage: LocalStorage):
    assert check_key("jobs/a/", prefix=True) == ["jobs", "a"]
    for prefix in ["", "/", "../", "jobs/../"]:
        with pytest.raises(ValueError):
            storage.delete_prefix(prefix)
    assert (storage.root / ".tmp").is_dir()
