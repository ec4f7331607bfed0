"""Helpers for tests and benchmarks: a tiny random model and synthetic preference data.

The tiny model uses the bundled model's tokenizer and chat template (so rendering is real)
with a 2-layer, 32-wide Llama body: scoring thousands of pairs takes seconds, which makes
memory and scaling behaviour measurable without waiting on a real model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .models import ModelSpec, load_tokenizer


def tiny_model_dir(path: Path, seed: int = 0) -> Path:
    """Write a randomly initialised tiny Llama (safetensors) with the bundled tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    tok = load_tokenizer(ModelSpec())
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


_WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
          "boxing matches in gardens of green tea and old maps").split()


def synthetic_pairs_file(path: Path, n: int, seed: int = 0) -> Path:
    """A JSONL file of `n` synthetic preference pairs (prompt/chosen/rejected columns)."""
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))

    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"syn-{i}", "prompt": text(3, 20),
                                "chosen": text(2, 12), "rejected": text(2, 12)}) + "\n")
    return Path(path)
