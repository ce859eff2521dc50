"""CLI: python -m export build | hf | validate | serve."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .served import Kind, ServedSpec, ServedTask

DEFAULT_REPOSITORY = Path("model_repository")


def _cmd_build(args: argparse.Namespace) -> int:
    from .build import build
    from .served_catalog import select

    names = args.models.split(",") if args.models else None
    specs, chat, served = select(names)
    report = build(
        specs, args.target, Path(args.repository), force=args.force, chat=chat, served=served
    )
    print(
        f"target={report.target} repository={report.repository} "
        f"built={report.built or '-'} cached={report.cached or '-'} in {report.seconds}s"
    )
    return 0


# `export hf` tasks served by a kind of export/kinds.py (the others are text models).
SERVED_HF_TASKS: dict[str, tuple[ServedTask, Kind]] = {
    "token-classification": ("token-classification", "hf-token-classifier"),
    # A seq2seq model is served as a summarizer (the `summarize` model's tensors and REST
    # shape, method "abstractive"): text in, generated text out.
    "text2text-generation": ("summarization", "hf-seq2seq"),
    "summarization": ("summarization", "hf-seq2seq"),
    "image-classification": ("image-classification", "hf-image-classifier"),
}
HF_TASKS = ("text-classification", "feature-extraction", *SERVED_HF_TASKS)


def _served_hf_spec(args: argparse.Namespace) -> ServedSpec:
    from .cache import directory_sha256
    from .served import ServedSpec
    from .spec import BatchingSpec, InstanceSpec

    task, kind = SERVED_HF_TASKS[args.task]
    model_dir = Path(args.model_dir).resolve()
    if not model_dir.is_dir():
        raise SystemExit(f"export hf: {args.model_dir} is not a directory")
    options = {"path": str(model_dir), "dir_sha256": directory_sha256(model_dir)}
    if kind == "hf-seq2seq":
        prefix = _summarization_prefix(model_dir)
        if prefix:  # T5's "summarize: ", prepended to every text
            options["prefix"] = prefix
    # Images are served as `imagenet` is: one instance with two onnxruntime threads,
    # batches of up to 32 (tokens mean nothing there: max_length 1, as imagenet's card).
    image = kind == "hf-image-classifier"
    spec = ServedSpec(
        name=args.name,
        task=task,
        kind=kind,
        package="",
        description=f"Hugging Face model {model_dir.name} ({args.task})",
        licence="see the model directory",
        version_description=f"from {model_dir}",
        max_length=1 if image else args.max_length,
        options=tuple(sorted(options.items())),
    )
    if image:
        spec = dataclasses.replace(
            spec,
            batching=BatchingSpec(max_batch_size=32),
            instances=InstanceSpec(cpu_count=1, cpu_threads=2),
        )
    return spec


def _summarization_prefix(model_dir: Path) -> str:
    from transformers import AutoConfig

    params = getattr(AutoConfig.from_pretrained(model_dir), "task_specific_params", None) or {}
    return str((params.get("summarization") or {}).get("prefix", ""))


def _cmd_hf(args: argparse.Namespace) -> int:
    from .build import build
    from .spec import EncoderSpec, HeadSpec, ModelSpec, VersionSpec

    if args.task in SERVED_HF_TASKS:
        served = (_served_hf_spec(args),)
        report = build((), args.target, Path(args.repository), reset=False, served=served)
        print(f"added {args.name} to {report.repository} in {report.seconds}s")
        return 0

    spec = ModelSpec(
        name=args.name,
        task=args.task,
        encoder=EncoderSpec(path=args.model_dir, pooling="mean"),
        versions=(VersionSpec(1, HeadSpec(kind="hf"), description=f"from {args.model_dir}"),),
        max_length=args.max_length,
        description=f"Hugging Face model {args.model_dir} ({args.task})",
        licence="see the model directory",
    )
    report = build((spec,), args.target, Path(args.repository), reset=False)
    print(f"added {args.name} to {report.repository} in {report.seconds}s")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .validate import validate_repository

    problems = validate_repository(Path(args.repository))
    print(json.dumps({"repository": args.repository, "problems": problems}, indent=2))
    return 1 if problems else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .triton_launcher import main as launcher_main

    return launcher_main(args.rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="export the bundled models and write the repository")
    b.add_argument("--target", choices=["cpu", "gpu"], default="cpu")
    b.add_argument("--models", help="comma-separated subset (default: all bundled)")
    b.add_argument("--repository", default=str(DEFAULT_REPOSITORY))
    b.add_argument("--force", action="store_true", help="ignore the cache")
    b.set_defaults(func=_cmd_build)

    h = sub.add_parser("hf", help="add any Hugging Face model directory through optimum")
    h.add_argument("--model-dir", required=True, help="directory (or hub id when online)")
    h.add_argument("--task", choices=HF_TASKS, required=True)
    h.add_argument("--name", required=True)
    h.add_argument("--max-length", type=int, default=256)
    h.add_argument("--target", choices=["cpu", "gpu"], default="cpu")
    h.add_argument("--repository", default=str(DEFAULT_REPOSITORY))
    h.set_defaults(func=_cmd_hf)

    v = sub.add_parser("validate", help="parse configs and check them against the ONNX graphs")
    v.add_argument("--repository", default=str(DEFAULT_REPOSITORY))
    v.set_defaults(func=_cmd_validate)

    s = sub.add_parser("serve", help="run the embedded Triton (see triton_launcher --help)")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=_cmd_serve)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
