"""Builder of the "hf-seq2seq" kind (export/kinds.py): any Hugging Face seq2seq directory
(T5, BART, ...; spec option "path") served as a summarization model with the Triton I/O
of the built-in `summarize` (TEXT + optional METHOD / MAX_SENTENCES / MAX_TOKENS in;
SUMMARY, METHOD, SENTENCES, SOURCE_SENTENCES, CHUNKS, NUM_TOKENS out), abstractive only.

optimum's exporter (task text2text-generation-with-past) writes encoder_model.onnx,
decoder_model.onnx, decoder_with_past_model.onnx and decoder_model_merged.onnx (the last
two decoders in one graph, their weights once, an If on use_cache_branch). The artifact
keeps the encoder and the merged decoder (what optimum's own ORTModelForSeq2SeqLM loads
by default), the tokenizer.json, config.json and generation_config.json; the runner is
export/runtime/seq2seq_pipeline.py.

The export-time check (raises, so a failing artifact is never published): on fixed texts
in one padded batch, the runner's encoder states and first-step logits against PyTorch's
(max |diff| within 1e-4, option "logit_atol"), its token ids against the Hugging Face
tokenizer's, and its greedy ids (the batch at once) against PyTorch's greedy generate run
one text at a time.

Spec options: path (the directory), prefix (prepended to every text, e.g. "summarize: "),
max_new_tokens (the default MAX_TOKENS, 128; requests may ask 1..512), logit_atol.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tritonclient.grpc import model_config_pb2 as mc

from .cache import file_sha256
from .onnx_export import onnx_io
from .runtime.seq2seq_pipeline import (
    DECODER_FILE,
    ENCODER_FILE,
    METHOD,
    Seq2SeqPipeline,
    generation_ids,
)
from .served import ServedSpec
from .spec import TEXT_INPUT, Target
from .summarize_export import SUMMARIZE_INPUTS, SUMMARIZE_OUTPUTS
from .triton_config import served_python_config

TASK = "text2text-generation-with-past"
RUNNER_FILES = (
    ENCODER_FILE,
    DECODER_FILE,
    "tokenizer.json",
    "config.json",
    "generation_config.json",
)
ARTIFACT_FILES = (*RUNNER_FILES, "facts.json")
RUNTIME = "seq2seq_model.py"
RUNTIME_MODULES = ("batch_model.py", "seq2seq_pipeline.py")
SOURCE_PACKAGES = ("optimum-onnx", "transformers", "onnx")

MAX_TOKENS_LIMIT = 512
DEFAULT_MAX_NEW_TOKENS = 128
CHECK_NEW_TOKENS = 24
# The check's texts: different lengths (one word to a paragraph), digits, quotes,
# non-ASCII, so the batch is padded and the greedy runs stop at different steps.
CHECK_TEXTS = (
    "Hello.",
    "The city council voted on Tuesday to expand the bus network with twelve new routes.",
    "Photosynthesis turns light into chemical energy. Chlorophyll absorbs mostly red and "
    "blue light. The energy splits water, releasing oxygen, and plants turn carbon dioxide "
    "into glucose with it. Almost all life depends on photosynthesis for food and oxygen.",
    'I bought these headphones for my commute. The app keeps asking me to "create an '
    'account." Overall, they are a good deal at 79.99 dollars.',
    "Knead the dough for ten minutes, let it rise for an hour, then bake it at 220 degrees.",
    "The match ended in a 2-2 draw.",
    "Dr. Rivera joined the team in 2019. She studies glaciers in Greenland, which raise sea "
    "levels by 0.7 mm a year.",
    "Les glaciers fondent plus vite qu'il y a dix ans, selon l'étude publiée à Genève.",
)


class FidelityError(RuntimeError):
    """The exported graphs differ from PyTorch: the artifact is not published."""


def runner_params(spec: ServedSpec, target: Target) -> dict[str, str]:
    """The python model's config parameters (the export-time check runs them on CPU).
    gpu: onnxruntime's CUDA provider first inside this same python model, when the
    environment's onnxruntime has it (onnxruntime-gpu); else the CPU, as on cpu."""
    gpu = target == "gpu"
    params = {
        "max_length": str(spec.max_length),
        "default_max_tokens": spec.option("max_new_tokens", str(DEFAULT_MAX_NEW_TOKENS)),
        "max_tokens_limit": str(MAX_TOKENS_LIMIT),
        # Rows decoded together: wide steps pay on the GPU; on CPU small chunks keep a
        # cancelled batch's tail short and the padding of mixed lengths low.
        "chunk_rows": str(min(64, spec.batching.max_batch_size) if gpu else 16),
        "providers": "CUDAExecutionProvider,CPUExecutionProvider"
        if gpu
        else "CPUExecutionProvider",
        "ort_intra_op_threads": str(spec.instances.cpu_threads),
        "ort_allow_spinning": "0",
        "cancel_poll_s": "0.1",
    }
    prefix = spec.option("prefix", "")
    if prefix:  # an empty string_value may be left out of the JSON Triton hands the model
        params["prefix"] = prefix
    return params


def export(model_dir: str, out_dir: Path) -> dict[str, dict[str, Any]]:
    """optimum's exporter -> the runner's files in out_dir; returns each graph's facts."""
    from optimum.exporters.onnx import main_export

    work = out_dir / "_optimum"
    shutil.rmtree(work, ignore_errors=True)
    # Our own check follows (against PyTorch, through the runner); optimum's is skipped.
    main_export(model_dir, output=str(work), task=TASK, device="cpu", do_validation=False)
    if any(work.glob("*.onnx_data")):
        raise RuntimeError(f"{model_dir}: the export wrote external data (a graph over 2 GB)")
    if not (work / "generation_config.json").is_file():
        from transformers import AutoConfig, GenerationConfig

        config = AutoConfig.from_pretrained(model_dir)
        GenerationConfig.from_model_config(config).save_pretrained(str(work))
    for name in RUNNER_FILES:
        if not (work / name).is_file():
            found = sorted(p.name for p in work.iterdir())
            raise RuntimeError(f"{model_dir}: optimum wrote no {name} (it wrote {found})")
        shutil.move(str(work / name), out_dir / name)
    shutil.rmtree(work, ignore_errors=True)
    graphs = {}
    for name in (ENCODER_FILE, DECODER_FILE):
        inputs, outputs = onnx_io(out_dir / name)
        path = out_dir / name
        graphs[name] = {
            "sha256": file_sha256(path),
            "bytes": path.stat().st_size,
            "inputs": inputs,
            "outputs": outputs,
        }
    return graphs


def _reference_config(ids: Any, new_tokens: int) -> Any:
    """PyTorch's generate with exactly what the runner does: greedy, its ids and forced
    tokens, nothing of the model's generation config besides (generate is called with
    use_model_defaults=False)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=new_tokens,
        decoder_start_token_id=ids.decoder_start,
        eos_token_id=sorted(ids.eos),
        pad_token_id=ids.pad,
        forced_bos_token_id=ids.forced_bos,
        forced_eos_token_id=ids.forced_eos,
    )


def fidelity(
    model_dir: str, out_dir: Path, params: dict[str, str], atol: float = 1e-4
) -> dict[str, Any]:
    """The runner against PyTorch on CHECK_TEXTS (see the module's docstring)."""
    import numpy as np
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    cpu = {**params, "providers": "CPUExecutionProvider", "ort_intra_op_threads": "2"}
    pipeline = Seq2SeqPipeline(out_dir, cpu)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [cpu.get("prefix", "") + t for t in CHECK_TEXTS]
    rows = pipeline.tokenize(list(CHECK_TEXTS))
    length = int(cpu["max_length"])
    theirs = [tokenizer(t, truncation=True, max_length=length).input_ids for t in texts]
    same_tokens = sum(a == b for a, b in zip(rows, theirs, strict=True))
    hidden, mask = pipeline.encode(rows)
    ids = pipeline.ids
    start = np.full((len(rows), 1), ids.decoder_start, dtype=np.int64)
    logits, _ = pipeline.step(start, hidden, mask, None)
    padded, _ = pipeline.pad(rows)
    with torch.no_grad():
        ids_t, mask_t = torch.from_numpy(padded), torch.from_numpy(mask)
        reference = model.get_encoder()(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
        first = model(
            input_ids=ids_t, attention_mask=mask_t, decoder_input_ids=torch.from_numpy(start)
        ).logits[:, -1, :]
    valid = mask[..., None].astype(bool)
    hidden_diff = float(np.abs(np.where(valid, hidden - reference.numpy(), 0)).max())
    logit_diff = float(np.abs(logits - first.numpy()).max())
    ours = pipeline.generate(rows, [CHECK_NEW_TOKENS] * len(rows), lambda: False)
    config = _reference_config(ids, CHECK_NEW_TOKENS)
    identical = 0
    first_difference = ""
    for r, row in enumerate(rows):
        with torch.no_grad():
            out = model.generate(
                torch.tensor([row]), generation_config=config, use_model_defaults=False
            )
        expected = out[0, 1:].tolist()  # after the decoder start; one row: no padding
        if ours[r] == expected:
            identical += 1
        elif not first_difference:
            first_difference = f"text {r}: ours {ours[r]}, PyTorch {expected}"
    n = len(rows)
    quality = {
        "seq2seq_check_texts": n,
        "seq2seq_tokenizer_identical": f"{same_tokens}/{n}",
        "seq2seq_max_abs_encoder_diff": hidden_diff,
        "seq2seq_max_abs_logit_diff": logit_diff,
        "seq2seq_greedy_identical": f"{identical}/{n}",
        "seq2seq_greedy_new_tokens": CHECK_NEW_TOKENS,
        "seq2seq_example": pipeline.tokenizer.decode(ours[2], skip_special_tokens=True),
    }
    problems = []
    if same_tokens != n:
        problems.append(f"token ids differ from the Hugging Face tokenizer's on {n - same_tokens}")
    if hidden_diff > atol or logit_diff > atol:
        problems.append(f"encoder |diff| {hidden_diff:.2e}, logits |diff| {logit_diff:.2e}")
    if identical != n:
        problems.append(f"greedy ids differ: {first_difference}")
    if problems:
        raise FidelityError(f"{model_dir}: " + "; ".join(problems) + f" (tolerance {atol:g})")
    return quality


def _digest(out_dir: Path, params: dict[str, str]) -> str:
    """One sha256 for the served behaviour (the frontend's result cache keys on it): every
    file the runner reads, and the parameters that change its answers."""
    lines = [f"{file_sha256(out_dir / name)}  {name}" for name in RUNNER_FILES]
    keys = ("max_length", "prefix", "default_max_tokens")
    lines.append(json.dumps({k: params.get(k, "") for k in keys}, sort_keys=True))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def build(spec: ServedSpec, out_dir: Path, bar: tqdm) -> dict[str, Any]:
    from transformers import AutoConfig

    model_dir = spec.option("path", "")
    if not model_dir:
        raise ValueError(f"{spec.name}: the spec names no model directory (option 'path')")
    default_tokens = int(spec.option("max_new_tokens", str(DEFAULT_MAX_NEW_TOKENS)))
    if not 1 <= default_tokens <= MAX_TOKENS_LIMIT:
        raise ValueError(f"{spec.name}: max_new_tokens {default_tokens} is not 1..512")
    config = AutoConfig.from_pretrained(model_dir)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and spec.max_length > positions:
        raise ValueError(
            f"{spec.name}: max_length {spec.max_length} is over the model's {positions}"
        )
    bar.set_postfix_str(f"{spec.name}: optimum export (seq2seq, with past)")
    started = time.monotonic()
    graphs = export(model_dir, out_dir)
    export_s = time.monotonic() - started
    bar.set_postfix_str(f"{spec.name}: fidelity against PyTorch")
    params = runner_params(spec, "cpu")
    started = time.monotonic()
    quality = fidelity(model_dir, out_dir, params, float(spec.option("logit_atol", "1e-4")))
    ids = generation_ids(out_dir)
    return {
        "labels": [],
        "methods": [METHOD],
        "model_type": config.model_type,
        "sources": [
            {"package": "huggingface-directory", "version": model_dir, "licence": spec.licence}
        ],
        "quality": quality,
        "artifact": {
            "file": f"{ENCODER_FILE}+{DECODER_FILE}",
            "sha256": _digest(out_dir, params),
            "bytes": sum(g["bytes"] for g in graphs.values()),
        },
        # Empty here: the card's onnx_io describes one model.onnx (export/validate.py
        # then looks for it); the two graphs are in "graphs".
        "onnx_io": {"inputs": {}, "outputs": {}},
        "graphs": graphs,
        "generation": {
            "decoder_start_token_id": ids.decoder_start,
            "eos_token_ids": sorted(ids.eos),
            "pad_token_id": ids.pad,
            "forced_bos_token_id": ids.forced_bos,
            "forced_eos_token_id": ids.forced_eos,
        },
        "prefix": params.get("prefix", ""),
        "default_max_tokens": default_tokens,
        "export_seconds": round(export_s, 1),
        "fidelity_seconds": round(time.monotonic() - started, 1),
    }


def config(spec: ServedSpec, target: Target, facts: dict[str, Any]) -> mc.ModelConfig:
    """Python backend, CPU instances on both targets: the instance kind only places the
    python stub; on gpu its onnxruntime sessions ask for the CUDA provider themselves
    (runner_params), so no separate onnxruntime-backend core is needed: the decoding loop
    and its past key values live in the runner, step after step."""
    return served_python_config(
        spec,
        (TEXT_INPUT,),
        SUMMARIZE_OUTPUTS,
        runner_params(spec, target),
        optional=SUMMARIZE_INPUTS,
    )


def extra_configs(spec: ServedSpec, target: Target, facts: dict[str, Any]) -> dict:
    return {}


def card_fields(spec: ServedSpec, facts: dict[str, Any], target: str) -> dict[str, Any]:
    length = spec.max_length
    prefix = facts.get("prefix", "")
    default = facts.get("default_max_tokens", DEFAULT_MAX_NEW_TOKENS)
    prefixed = f" (after the prefix {prefix!r})" if prefix else ""
    return {
        "truncation": f"texts{prefixed} longer than {length} tokens, the model's special "
        f"tokens included, are truncated to the first {length}: the rest is not read "
        f"(NUM_TOKENS, the tokens read, is then {length}). abstractive only, greedy "
        "decoding (the model's forced first and last tokens apply; its beam, length and "
        "n-gram settings do not); max_tokens "
        f"1..{MAX_TOKENS_LIMIT} new tokens (default {default}); generation stops at the "
        "model's end-of-sequence token or at max_tokens",
        "methods": list(facts["methods"]),
        "score_kind": None,
        "score_meaning": None,
        "triton_io": {
            "inputs": {
                "TEXT": "BYTES [batch, 1], UTF-8",
                "METHOD": "BYTES [batch, 1], optional: abstractive (extractive is refused)",
                "MAX_SENTENCES": "INT32 [batch, 1], optional: ignored (extractive only)",
                "MAX_TOKENS": f"INT32 [batch, 1], optional: 1..{MAX_TOKENS_LIMIT} "
                f"(default {default})",
            },
            "outputs": [t.name for t in SUMMARIZE_OUTPUTS],
            "decoupled": False,
        },
    }
