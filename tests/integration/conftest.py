"""Session fixtures: the real embedded Triton over the built repository, on free ports."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export.triton_launcher import EmbeddedTriton, TritonPorts
from procs.ports import free_port
from procs.redis_server import start_redis
from procs.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "model_repository"


def free_ports() -> TritonPorts:
    """Ports for one more Triton (the tests start several)."""
    return TritonPorts.free()


@pytest.fixture(scope="session")
def repository() -> Path:
    if not (REPOSITORY / "intent" / "config.pbtxt").exists():
        pytest.fail("model_repository is not built; run `make models` (make test does)")
    return REPOSITORY


@pytest.fixture(scope="session")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTriton]:
    log = (tmp_path_factory.mktemp("triton") / "triton.log").open("w")
    server = EmbeddedTriton(repository, free_ports(), log_sink=lambda line: print(line, file=log))
    server.start(ready_timeout=300)
    yield server
    server.stop()
    log.close()


@pytest.fixture(scope="session")
def client(triton: EmbeddedTriton) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(triton.grpc_url)
    yield c
    c.close()


def card(repository: Path, model: str, version: int) -> dict:
    return json.loads((repository / model / str(version) / "card.json").read_text())


def text_input(texts: list, dtype: str = "BYTES") -> grpcclient.InferInput:
    array = np.array([[t] for t in texts], dtype=object)
    tensor = grpcclient.InferInput("TEXT", list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def infer(
    client: grpcclient.InferenceServerClient,
    model: str,
    texts: list,
    outputs: tuple[str, ...],
    version: str = "",
) -> dict[str, np.ndarray]:
    result = client.infer(
        model,
        [text_input(texts)],
        model_version=version,
        outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
        client_timeout=120,
    )
    return {o: result.as_numpy(o) for o in outputs}


class LiveFrontend:
    """The real app under uvicorn in a thread, on a free port."""

    def __init__(self, app) -> None:
        import threading

        import uvicorn

        self.app = app
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(
            lambda: self.server.started,
            "the frontend to start",
            30,
            interval_s=0.05,
            stop_early=lambda: None if self.thread.is_alive() else "its server thread ended",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


# The bootstrap admin key of every test frontend; test clients send it unless a test says
# otherwise (tier "unlimited": the tests that measure limits make their own keys).
ADMIN_KEY = "integration-admin-key-0123456789abcdef"
ADMIN = {"X-API-Key": ADMIN_KEY}
# The server secret for this test session: random, shared by every frontend it starts.
TEST_SECRET = secrets.token_urlsafe(32)
# The key of Triton's restricted admin APIs for this session: every EmbeddedTriton and
# `serve` started here reads it from the environment, every test frontend is given it.
TRITON_ADMIN_KEY = os.environ.setdefault("INFERGATE_TRITON__ADMIN_KEY", secrets.token_urlsafe(32))


def frontend_settings(
    grpc_url: str,
    repository: Path,
    redis_url: str | None = None,
    auth: dict | None = None,
    cache: dict | None = None,
    **triton_overrides,
):
    """Caching is off unless a test asks for it: most tests here measure what Triton
    does with repeated inputs (the caching tests turn it on)."""
    from frontend.settings import (
        AuthSettings,
        CacheSettings,
        RedisSettings,
        Settings,
        TritonSettings,
    )

    return Settings(
        cache=CacheSettings(**{"enabled": False, **(cache or {})}),
        environment="test",
        secret_key=TEST_SECRET,
        triton=TritonSettings(
            url=grpc_url,
            model_repository=repository,
            admin_key=TRITON_ADMIN_KEY,
            **triton_overrides,
        ),
        redis=RedisSettings(url=redis_url),
        auth=AuthSettings(**{"bootstrap_admin_key": ADMIN_KEY, **(auth or {})}),
    )


class RedisServer:
    """A private redis-server on a free port (nothing saved to disk), killable and
    restartable on the same port by the tests that need Redis to fail."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        self.proc, _ = start_redis(self.port, workdir=self.workdir)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_timeout=5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def frontend(triton: EmbeddedTriton, repository: Path) -> Iterator[LiveFrontend]:
    from frontend.app import create_app

    live = LiveFrontend(create_app(frontend_settings(triton.grpc_url, repository)))
    yield live
    live.stop()


@pytest.fixture(scope="session")
def http(frontend: LiveFrontend):
    import httpx

    with httpx.Client(base_url=frontend.url, timeout=60, headers=ADMIN) as client:
        yield client


class PostgresServer:
    """A private PostgreSQL on a free port (its own cluster in a fresh directory; see
    procs/postgres_server.py for running as root), killable with SIGKILL and restartable
    on the same port and data by the tests that need the database to fail."""

    def __init__(self) -> None:
        import tempfile

        # Not under pytest's base temp: that is 0700 root, and when the tests run as root
        # the server runs as another account that must be able to enter its directory.
        self.workdir = Path(tempfile.mkdtemp(prefix="infergate-postgres-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> PostgresServer:
        from procs.postgres_server import find_binary, start_postgres

        if find_binary("initdb") is None or find_binary("postgres") is None:
            pytest.fail("PostgreSQL is not installed (.ci/run installs it)")
        self.proc, _ = start_postgres(self.workdir, self.port)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """A crash (kill -9 of the server and its backends); `start()` brings it back."""
        from procs.postgres_server import kill_postgres

        if self.proc is not None:
            kill_postgres(self.proc)

    def stop(self) -> None:
        from procs.postgres_server import stop_postgres

        if self.proc is not None:
            stop_postgres(self.proc)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://infergate@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        from procs.postgres_server import simple_query

        return simple_query(self.port, sql, database=database)

    def create_database(self) -> str:
        """A new empty database (its name)."""
        name = f"t_{secrets.token_hex(6)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        if self.running:
            self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test, on each engine: a new SQLite file, or a new
    database on the session's private PostgreSQL (started only when a test asks)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'infergate.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    if not server.running:  # a test that killed it and failed before restarting it
        server.start()
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)
