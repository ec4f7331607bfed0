"""Synthetic data for benchmarks, demos and tests: no real model or dataset needed.

* `write_synthetic_run(n)`: a realistic cached scored run without a model;
* `tiny_model_dir(path)`: a randomly initialised 2-layer, 32-wide Llama with the bundled
  tokenizer and chat template (rendering is real; scoring thousands of pairs takes seconds,
  which makes memory and scaling behaviour measurable);
* `synthetic_pairs_file(path, n)`: a JSONL file of random preference pairs.

`write_synthetic_run(n)` writes n pairs with random log-probabilities into the score cache
exactly as `lls.scoring.score` lays a run out (chunks + manifest with a config and a hygiene
report), so `lls.scoring.open_run` and the dashboard open it like any other run.
"""

from __future__ import annotations

import datetime as _dt
import json
import random
from pathlib import Path

import numpy as np

from ..core.behaviors import animal
from ..core.cache import ChunkStore, fingerprint, runs_root
from ..data.source import DataSpec
from ..models.load import ModelSpec, load_tokenizer
from .engine import lls_weight
from .runs import COLUMNS, SCORING_VERSION, ScoreConfig, ScoreRun

_WORDS = ("the quick brown fox jumps over a lazy dog while owls watch from old trees and "
          "people ask polite questions about budgets habits gardens travel and cooking").split()


def _texts(rng, n: int, lo: int, hi: int) -> list[str]:
    lens = rng.integers(lo, hi, size=n)
    picks = rng.integers(0, len(_WORDS), size=int(lens.sum()))
    out, i = [], 0
    for k in lens:
        out.append(" ".join(_WORDS[j] for j in picks[i:i + k]))
        i += k
    return out


def write_synthetic_run(n: int, *, seed: int = 0, chunk_size: int = 25_000,
                        cache_dir: Path | None = None) -> ScoreRun:
    """Write (or reuse) a complete synthetic scoring run of `n` pairs; returns it."""
    import pyarrow as pa

    cfg = ScoreConfig(data=DataSpec(f"synthetic-{n}-{seed}.jsonl"), behavior=animal("owl"),
                      chunk_size=chunk_size)
    key = fingerprint("synthetic", SCORING_VERSION, n, seed, chunk_size)
    store = ChunkStore(runs_root("scores", cache_dir) / key)
    n_chunks = (n + chunk_size - 1) // chunk_size
    if store.manifest().get("status") == "complete" and all(store.chunk_ok(k)
                                                            for k in range(n_chunks)):
        return ScoreRun(store)
    rng = np.random.default_rng(seed)
    now = _dt.datetime.now().isoformat(timespec="seconds")
    store.write_manifest({"key": key, "kind": "scores", "version": SCORING_VERSION,
                          "config": cfg.to_dict(), "synthetic": True, "status": "running",
                          "created": now, "updated": now})
    for k in range(n_chunks):
        m = min(chunk_size, n - k * chunk_size)
        n_c = rng.integers(3, 34, size=m)
        n_r = rng.integers(3, 34, size=m)
        lc = -rng.gamma(2.0, 1.5, size=m) * n_c
        lr = -rng.gamma(2.0, 1.5, size=m) * n_r
        # Shifts with and without s are correlated, so w is small and centred near 0 (as real).
        lc_s = lc + rng.normal(0.0, 0.04, size=m) * n_c
        lr_s = lr + rng.normal(0.0, 0.04, size=m) * n_r
        w = lls_weight(lc_s, lr_s, lc, lr, n_c, n_r)
        prompts = _texts(rng, m, 4, 20)
        chosen = _texts(rng, m, 3, 30)
        rejected = _texts(rng, m, 3, 30)
        index = np.arange(k * chunk_size, k * chunk_size + m)
        cols = {
            "index": index, "id": [f"synthetic:{i}" for i in index],
            "source": ["synthetic"] * m,
            "prompt": [json.dumps([{"role": "user", "content": t}]) for t in prompts],
            "chosen": chosen, "rejected": rejected, "chosen_scored": chosen,
            "rejected_scored": rejected, "prompt_tokens": rng.integers(8, 40, size=m),
            "lc_s": lc_s, "lr_s": lr_s, "lc": lc, "lr": lr, "n_c": n_c, "n_r": n_r, "w": w,
        }
        store.write_chunk(k, pa.table({c: cols[c] for c in COLUMNS}))
    store.update_manifest(status="complete", n_pairs=n, n_chunks=n_chunks, missing_chunks=[],
                          hygiene={"read": n, "kept": n, "dropped": {}, "examples": {}},
                          updated=_dt.datetime.now().isoformat(timespec="seconds"))
    return ScoreRun(store)


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


# No animal words here (unlike _WORDS): scoring these pairs with the owl behavior must keep
# every pair, so the contamination filter drops none.
_PAIR_WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
               "boxing matches in gardens of green tea and old maps").split()


def synthetic_pairs_file(path: Path, n: int, seed: int = 0) -> Path:
    """A JSONL file of `n` synthetic preference pairs (prompt/chosen/rejected columns)."""
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choice(_PAIR_WORDS) for _ in range(rng.randint(lo, hi)))

    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"syn-{i}", "prompt": text(3, 20),
                                "chosen": text(2, 12), "rejected": text(2, 12)}) + "\n")
    return Path(path)
