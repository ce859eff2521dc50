"""`python -m frontend serve` prepares the database before it starts Triton and the
workers: driven through `main(["serve"])` up to the launcher and uvicorn (both stood in
for), over a SQLite file, the order of the three steps recorded."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.ext.asyncio import create_async_engine

from frontend import __main__ as cli
from frontend.db import cli as db_cli
from frontend.db import migrate


@pytest.fixture
def environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`serve` writes os.environ (as it must, for its workers): put it back afterwards.
    Runs in a fresh directory (the embedded database and the dev keys land there)."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("INFERGATE_") or name == "PROMETHEUS_MULTIPROC_DIR":
            del os.environ[name]
    monkeypatch.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.environ.clear()
        os.environ.update(saved)


def revision(url: str) -> str | None:
    async def read() -> str | None:
        engine = create_async_engine(url)
        try:
            return await migrate.current(engine)
        finally:
            await engine.dispose()

    return asyncio.run(read())


class Steps:
    """What `serve` did, in order: ("database", url) when it prepared the database,
    ("triton", revision) when it started the launcher, ("workers", revision) when it
    handed over to uvicorn; the revision is the database's at that moment."""

    def __init__(self) -> None:
        self.done: list[tuple[str, Any]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.done]

    def at_that_time(self) -> str | None:
        url = os.environ.get("INFERGATE_DATABASE__URL")
        return revision(url) if url else None


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Steps:
    seen = Steps()
    real_prepare = db_cli.prepare_database

    def prepare(settings: Any) -> str:
        seen.done.append(("database", None))
        url = real_prepare(settings)
        seen.done[-1] = ("database", url)
        return url

    class Launcher:
        """Stands in for the launcher process (Triton): ready at once."""

        def __init__(self, cmd: list[str], **kwargs: Any) -> None:
            seen.done.append(("triton", seen.at_that_time()))
            self.stdout = io.StringIO("Triton ready: gRPC 127.0.0.1:8001\n")
            self.returncode: int | None = None

        def poll(self) -> int | None:
            return self.returncode

    def run(app: str, **options: Any) -> None:
        seen.done.append(("workers", seen.at_that_time()))

    # `_prepare_database` imports it from frontend.db.cli when called: patched there.
    monkeypatch.setattr(db_cli, "prepare_database", prepare)
    monkeypatch.setattr(cli.subprocess, "Popen", Launcher)
    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(cli, "stop_process", lambda proc, timeout_s: None)
    monkeypatch.setattr(cli, "_sigterm_like_sigint", lambda: None)  # pytest keeps its own
    return seen


@pytest.mark.parametrize(
    ("argv", "order"),
    [
        ([], ["database", "triton", "workers"]),  # the embedded Triton
        (["--triton-url", "127.0.0.1:1"], ["database", "workers"]),  # a running one
    ],
)
def test_serve_migrates_the_database_before_triton_and_the_workers_start(
    environ: Path, steps: Steps, argv: list[str], order: list[str]
):
    assert cli.main(["serve", *argv]) == 0
    assert steps.names() == order
    embedded = environ.resolve() / ".infergate" / "infergate.db"
    assert steps.done[0] == ("database", f"sqlite+aiosqlite:///{embedded}")
    # Triton and the workers start with the database at head, and the workers are told
    # which one it is (the file, by its absolute path).
    assert all(at == migrate.head() for _, at in steps.done[1:])
    assert os.environ["INFERGATE_DATABASE__URL"] == f"sqlite+aiosqlite:///{embedded}"


def test_serve_in_prod_with_an_unmigrated_database_stops_before_triton(environ: Path, steps: Steps):
    url = f"sqlite+aiosqlite:///{environ / 'prod.db'}"
    os.environ.update(
        INFERGATE_ENVIRONMENT="prod",
        INFERGATE_SECRET_KEY=secrets.token_urlsafe(48),
        INFERGATE_DATABASE__URL=url,
    )
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve"])
    message = stopped.value.code
    assert isinstance(message, str)  # printed by Python as it is, exit status 1
    assert message.startswith("cannot start: the database is empty") and "\n" not in message
    assert "run `python -m frontend db upgrade`" in message
    assert steps.names() == ["database"]  # neither Triton nor a worker started
    assert revision(url) is None  # and prod migrated nothing
