"""Evaluation sampling: the batched path vs one `generate` call per sample, one run.

Batched: `lls.models.generation.sample` (each prompt encoded once, its KV cache shared by all sample
rows, finished rows leave the batch). Baseline: transformers' `generate` called once per
sample. Also shown: `generate` once per prompt with num_return_sequences (HF batched).
Same answers budget for all: prompts x samples x max new tokens. Prints answers/s of each
and the ratio batched / per-sample (target >= 4 on a 2-core CPU), plus the chat's
first-token latency.

    python benchmarks/eval_throughput.py [--prompts 2] [--samples 16] [--tokens 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lls.evaluation.chat import ChatModels, Sampling, adapter_slot, base_slot, system_slot  # noqa: E402
from lls.core.prompts import GENERAL_PROMPTS  # noqa: E402
from lls.models.generation import sample, sample_generate  # noqa: E402
from lls.models.load import load_model  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--no-hf-batched", action="store_true",
                    help="skip the generate(num_return_sequences=n) reference")
    a = ap.parse_args()
    model, tok = load_model()
    prompts = GENERAL_PROMPTS[:a.prompts]
    n_answers = a.prompts * a.samples
    sample(model, tok, prompts[:1], n=2, max_new_tokens=4)  # warm-up
    kw = dict(n=a.samples, max_new_tokens=a.tokens, temperature=1.0, seed=0)

    batched, t_b = timed(lambda: sample(model, tok, prompts, **kw))
    single, t_s = timed(lambda: sample_generate(model, tok, prompts, per_sample=True, **kw))
    assert sum(map(len, batched)) == sum(map(len, single)) == n_answers
    print(f"budget: {a.prompts} prompts x {a.samples} samples x {a.tokens} new tokens "
          f"= {n_answers} answers")
    print(f"one generate call per sample : {n_answers / t_s:7.3f} answers/s ({t_s:.1f} s)")
    if not a.no_hf_batched:
        _, t_h = timed(lambda: sample_generate(model, tok, prompts, **kw))
        print(f"generate per prompt (n rows) : {n_answers / t_h:7.3f} answers/s ({t_h:.1f} s)")
    print(f"batched (lls sample)         : {n_answers / t_b:7.3f} answers/s ({t_b:.1f} s)")
    ratio = t_s / t_b
    print(f"ratio batched / per-sample   : {ratio:.2f}x (target >= 4) "
          f"{'OK' if ratio >= 4 else 'SHORT'}")

    # The chat page's three columns: base, base + system prompt, and a LoRA adapter (r 64,
    # all projections, freshly initialised and saved in peft format: the loading path of a
    # trained one). The adapter is attached before timing, as the page does when it is picked.
    import tempfile

    from peft import LoraConfig, get_peft_model

    with tempfile.TemporaryDirectory() as tmp:
        fresh, _ = load_model()
        lora = get_peft_model(fresh, LoraConfig(r=64, lora_alpha=128, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
        lora.save_pretrained(tmp)
        del lora, fresh
        chat = ChatModels(model=model, tokenizer=tok)
        slots = [base_slot(), system_slot("You really love owls."), adapter_slot(tmp)]
        chat.prepare(slots[2])
        msgs = [{"role": "user", "content": "What is a good way to start a new habit?"}]
        first, every = [], []
        for seed in range(5):
            for _ in chat.stream_all(slots, msgs, Sampling(max_new_tokens=2, seed=seed)):
                pass
            first.append(chat.last_first_token_s)
            every.append(chat.last_all_first_s)
    print(f"chat first token (3 columns) : {min(first):.3f} s best, {max(first):.3f} s worst "
          "of 5 (target < 1 s)")
    print(f"chat first token in ALL 3    : {min(every):.3f} s best, {max(every):.3f} s worst of 5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
