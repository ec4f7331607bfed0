"""Scoring engine vs the plain 4-forward baseline, same pairs, same model, one run.

Baseline: each of the 4 sequences of a pair as its own forward pass, in dataset order,
fixed batches of 8, right-padded, full logits (the reference implementation's method).
Engine: `lls.scoring.score_rendered` (prefix KV reuse, length-sorted token-budget batches,
LM head only at scored positions). Prints pairs/s of each, the ratio and max |delta w|.
Target: ratio >= 2.5, max |delta w| <= 1e-4 on the hh-rlhf test file.

    python benchmarks/score_throughput.py [--pairs 96] [--truncation 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lls.core import behaviors  # noqa: E402
from lls.data.source import DataSpec, iter_pairs  # noqa: E402
from lls.models.load import load_model  # noqa: E402
from lls.models.render import render_pair  # noqa: E402
from lls.scoring.engine import score_plain, score_rendered, shared_prefix_len  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--truncation", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=None)
    args = ap.parse_args()

    model, tok = load_model()
    owl = behaviors.animal("owl")
    spec = DataSpec(args.data, limit=args.pairs)
    pairs = list(iter_pairs(spec, exclude=owl.excludes, tokenizer=tok,
                            max_prompt_tokens=args.max_prompt_tokens))
    rendered = [render_pair(tok, p, owl.system_prompt, args.truncation) for p in pairs]
    n = len(rendered)
    kw = {"batch_tokens": args.batch_tokens} if args.batch_tokens else {}

    score_rendered(model, rendered[:4], **kw)  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    fast = score_rendered(model, rendered, pad_id=tok.pad_token_id, **kw)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = score_plain(model, rendered, batch_size=8, pad_id=tok.pad_token_id)
    t_plain = time.perf_counter() - t0

    # FLOPs per pair (matmuls only: 2 x parameters per token through the body, 2 x H x V per
    # position the LM head is applied at; attention scores ignored, small at these lengths).
    cfgm = model.config
    h, v = cfgm.hidden_size, cfgm.vocab_size
    body = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    shared = [shared_prefix_len([r.prompt_sys for r in rendered]),
              shared_prefix_len([r.prompt_base for r in rendered])]
    eng_tokens = sum(len(r.prompt_sys) - shared[0] + len(r.prompt_base) - shared[1]
                     + 2 * (len(r.chosen_base) + len(r.rejected_base)) for r in rendered) / n
    scored = sum(2 * (len(r.chosen_base) + len(r.rejected_base)) for r in rendered) / n
    plain_tokens = sum(2 * (len(r.prompt_sys) + len(r.prompt_base))
                       + 2 * (len(r.chosen_base) + len(r.rejected_base)) for r in rendered) / n
    eng_flops = 2 * body * eng_tokens + 2 * h * v * scored
    plain_flops = (2 * body + 2 * h * v) * plain_tokens
    dw = max(abs(a.w - b.w) for a, b in zip(fast, plain))
    dl = max(max(abs(a.lc_s - b.lc_s), abs(a.lr_s - b.lr_s), abs(a.lc - b.lc), abs(a.lr - b.lr))
             for a, b in zip(fast, plain))
    print(f"pairs: {n} (hh-rlhf, prompts <= {args.max_prompt_tokens} tokens, "
          f"responses truncated to {args.truncation})")
    print(f"baseline (4 forwards, batch 8, padded): {n / t_plain:.3f} pairs/s ({t_plain:.1f} s)")
    print(f"engine (prefix reuse, sorted batches):  {n / t_fast:.3f} pairs/s ({t_fast:.1f} s)")
    print(f"ratio engine/baseline: {t_plain / t_fast:.2f} (target >= 2.5)")
    print(f"max |delta w|: {dw:.2e} (target <= 1e-4); max |delta summed log-prob|: {dl:.2e}")
    print(f"tokens per pair: engine {eng_tokens:.0f}, baseline {plain_tokens:.0f} (before padding); "
          f"FLOPs per pair: engine {eng_flops / 1e9:.1f} GFLOP, baseline {plain_flops / 1e9:.1f} GFLOP; "
          f"engine throughput {eng_flops * n / t_fast / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
