"""Sampled pairs scored per answer against pair by pair: speed-up and agreement.

Samples k answers (T 1, `--answer-tokens` new tokens) from the bundled model for real
single-turn hh-rlhf prompts, then scores every pair of each prompt's answers two ways, with
the model loaded once and a warm-up outside the clocks:
  * per answer (`lls.scoring.answers`): each answer rendered and scored once under both
    conditions, its prompt shared with the other answers, pairs formed from the scores;
  * pair by pair: each pair rendered (`render_pair`) and scored by the engine
    (`score_rendered`), as a dataset of these pairs would be.
Rendering is on both clocks. The prompts are split into `--rounds` groups timed one after the
other, the two ways alternating in order (A B, B A, ...), so load from other processes drifts
onto both clocks alike. Prints `ratio` = pairs/s per answer / pairs/s pair by pair (target
>= 2.5 at k 4) and `max_abs_dw` (target <= 1e-5) over the same pairs, plus the sampling
rate (answers/s) for scale.

    python benchmarks/score_sampled.py [--prompts 24] [--k 4] [--answer-tokens 32] [--rounds 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lls.core import behaviors  # noqa: E402
from lls.core.pair import Pair  # noqa: E402
from lls.data.prompts import PromptSource, iter_prompts  # noqa: E402
from lls.data.source import DataSpec  # noqa: E402
from lls.models.load import load_model  # noqa: E402
from lls.models.render import render_pair  # noqa: E402
from lls.scoring.answers import answer_pairs, render_answers, score_prompt_answers  # noqa: E402
from lls.scoring.engine import score_rendered  # noqa: E402
from lls.scoring.sampled import sample_answers  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"


def per_answer(model, tok, items, answers, system_prompt, truncation, batch_tokens):
    rendered = [render_answers(tok, it.messages, a, system_prompt, truncation)
                for it, a in zip(items, answers)]
    scores = score_prompt_answers(model, rendered, batch_tokens=batch_tokens,
                                  pad_id=tok.pad_token_id)
    return [(i, c, r, ps) for i, sc in enumerate(scores) for c, r, ps in answer_pairs(sc)]


def pair_by_pair(model, tok, items, answers, pairs, system_prompt, truncation, batch_tokens):
    rendered = [render_pair(tok, Pair(str(i), items[i].messages, answers[i][c], answers[i][r]),
                            system_prompt, truncation) for i, c, r in pairs]
    return score_rendered(model, rendered, batch_tokens=batch_tokens, pad_id=tok.pad_token_id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--answer-tokens", type=int, default=32)
    ap.add_argument("--truncation", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--behavior", default="animal:owl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()

    model, tok = load_model()
    s = behaviors.from_name(args.behavior).system_prompt
    items = list(iter_prompts([PromptSource.dataset(DataSpec(args.data))], tokenizer=tok,
                              max_prompt_tokens=args.max_prompt_tokens, limit=args.prompts))
    t0 = time.perf_counter()
    answers = sample_answers(model, tok, items, k=args.k, max_new_tokens=args.answer_tokens,
                             temperature=1.0, seed=args.seed)
    t_sample = time.perf_counter() - t0
    n_sampled = sum(len(a) for a in answers)
    # Distinct non-empty answers only, as a sampled run pairs them.
    answers = [list(dict.fromkeys(a.strip() for a in ans if a.strip())) for ans in answers]
    keep = [i for i, a in enumerate(answers) if len(a) >= 2]
    items, answers = [items[i] for i in keep], [answers[i] for i in keep]
    kw = dict(system_prompt=s, truncation=args.truncation, batch_tokens=args.batch_tokens)

    # Warm-up outside the clocks (allocator, kernels).
    warm = per_answer(model, tok, items[:2], answers[:2], **kw)
    pair_by_pair(model, tok, items[:2], answers[:2], [(i, c, r) for i, c, r, _ in warm], **kw)

    t_fast = t_ref = 0.0
    dws, n = [], 0
    for rnd in range(args.rounds):
        sel = list(range(rnd, len(items), args.rounds))
        its, ans = [items[i] for i in sel], [answers[i] for i in sel]
        if not its:
            continue
        fast = pairs = ref = None
        for way in ((0, 1) if rnd % 2 == 0 else (1, 0)):
            if way == 1:
                # pair by pair needs the pairs: those of the per-answer pass (untimed if that
                # pass has not run yet in this round)
                pairs = [(i, c, r) for i, c, r, _ in
                         (fast or per_answer(model, tok, its, ans, **kw))]
            t0 = time.perf_counter()
            if way == 0:
                fast = per_answer(model, tok, its, ans, **kw)
                t_fast += time.perf_counter() - t0
            else:
                ref = pair_by_pair(model, tok, its, ans, pairs, **kw)
                t_ref += time.perf_counter() - t0
        assert pairs == [(i, c, r) for i, c, r, _ in fast]
        dws += [abs(ps.w - q.w) for (_, _, _, ps), q in zip(fast, ref)]
        n += len(fast)
    dw = max(dws)
    n_answers = sum(len(a) for a in answers)
    print(f"prompts {len(items)}  answers {n_answers}  pairs {n}  k {args.k}  "
          f"answer tokens {args.answer_tokens}")
    print(f"sampling: {t_sample:.1f} s, {n_sampled / t_sample:.2f} answers/s "
          "(all prompts sampled, before dropping)")
    print(f"per answer:   {t_fast:.1f} s, {n / t_fast:.2f} pairs/s")
    print(f"pair by pair: {t_ref:.1f} s, {n / t_ref:.2f} pairs/s")
    print(f"ratio {(n / t_fast) / (n / t_ref):.2f}")
    print(f"max_abs_dw {dw:.2e}")


if __name__ == "__main__":
    main()
