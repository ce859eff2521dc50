"""Settings refuse nonsense, and every environment example the docs show is accepted."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import annotated_types
import pytest
from pydantic import BaseModel, ValidationError

from frontend.settings import LimitSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
# `INFERGATE_X__Y='json'` or `INFERGATE_X__Y=value` as written in the docs.
EXAMPLE = re.compile(r"(INFERGATE_[A-Z0-9_]+)=('[^']*'|[^\s`'\"]+)")


def _doc_examples() -> list[tuple[str, str, str]]:
    found = []
    pages = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "frontend/settings.py",
    ]
    for path in pages:
        for name, value in EXAMPLE.findall(path.read_text()):
            found.append((path.name, name, value.strip("'")))
    return found


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("INFERGATE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_docs_show_examples():
    assert len(_doc_examples()) >= 10


@pytest.mark.parametrize(("page", "name", "value"), _doc_examples())
def test_every_documented_environment_example_is_accepted(clean_env, page, name, value):
    if name == "INFERGATE_ENVIRONMENT" and value == "prod":
        clean_env.setenv("INFERGATE_SECRET_KEY", "a-production-secret-with-enough-entropy-9f2k")
    clean_env.setenv(name, value)
    Settings()  # raises on a value the docs promise works


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INFERGATE_TRITON__TIMEOUTS", '{"intent": -1}'),
        ("INFERGATE_TRITON__TIMEOUTS", '{"intent": 0}'),
        ("INFERGATE_TRITON__TIMEOUTS", '{"intent": 100000}'),
        ("INFERGATE_CACHE__TTLS", '{"embed": 0}'),
        ("INFERGATE_CACHE__TTLS", '{"embed": -5}'),
        ("INFERGATE_TRITON__DEFAULT_TIMEOUT_S", "0"),
        ("INFERGATE_LIMITS__MAX_BODY_BYTES", "-1"),
        ("INFERGATE_LIMITS__MAX_BODY_BYTES", str(1 << 40)),
        ("INFERGATE_AUTH__OUTAGE_CACHE_S", "-1"),
        ("INFERGATE_REDIS__MAX_CONNECTIONS", "100000000"),
        ("INFERGATE_GENERATION__TIMEOUT_S", "0"),
        # Over the bundled models' Triton max_batch_size (Triton would refuse the request).
        ("INFERGATE_LIMITS__MAX_ENTITY_ITEMS", "65"),
        ("INFERGATE_LIMITS__MAX_SUMMARY_ITEMS", "9"),
        ("INFERGATE_LIMITS__MAX_IMAGES", "33"),
    ],
)
def test_nonsense_is_refused(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def _numeric_fields(model: type[BaseModel], prefix: str = ""):
    """(dotted name, bounds) of every int / float setting, nested sections included; the
    values of dict settings (per-model maps) count as fields of their own."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        dotted = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _numeric_fields(annotation, dotted + ".")
            continue
        origin = typing.get_origin(annotation)
        if origin is dict:
            value_type = typing.get_args(annotation)[1]
            if typing.get_origin(value_type) is typing.Annotated:
                base, *meta = typing.get_args(value_type)
                if base in (int, float):
                    yield dotted + "[*]", meta
            elif value_type in (int, float):
                yield dotted + "[*]", []
            continue
        args = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else ()
        numeric = annotation in (int, float) or any(a in (int, float) for a in args)
        if numeric:
            yield dotted, field.metadata


def _bounds(metadata) -> tuple[bool, bool]:
    flat = []
    for item in metadata:
        flat.extend(getattr(item, "metadata", [item]))
    lower = any(isinstance(m, annotated_types.Ge | annotated_types.Gt) for m in flat)
    upper = any(isinstance(m, annotated_types.Le | annotated_types.Lt) for m in flat)
    return lower, upper


def test_every_numeric_setting_is_bounded_both_ways():
    fields = list(_numeric_fields(Settings))
    assert len(fields) > 30  # the walk reaches the nested sections
    unbounded = [name for name, meta in fields if _bounds(meta) != (True, True)]
    assert unbounded == []


@pytest.mark.parametrize(
    ("setting", "models"),
    [
        ("max_entity_items", ("ner", "pii")),
        ("max_summary_items", ("summarize",)),
        ("max_images", ("imagenet",)),
    ],
)
def test_item_caps_fit_the_models_triton_batch(setting, models):
    """A request's items go to Triton as one request, which it refuses whole over the
    model's max_batch_size: the setting's upper bound is the smallest of its models'."""
    from export.served_catalog import SERVED

    batch = {spec.name: spec.batching.max_batch_size for spec in SERVED}
    [upper] = [m.le for m in LimitSettings.model_fields[setting].metadata if hasattr(m, "le")]
    assert upper == min(batch[name] for name in models)
    assert LimitSettings.model_fields[setting].default <= upper
