"""How much the ranking moves between the two neutral conventions ("template" / "empty").

Scores the same single-turn hh-rlhf pairs (no system turn of their own, so the conventions
differ on every pair) with the owl prompt under both conventions and prints the Pearson and
Spearman correlation of the two weight vectors and the overlap of their top-8 and top-10%
sets (the numbers quoted in docs/results.md).

    python benchmarks/neutral_convention.py [--pairs 160] [--truncation 32]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lls.core import behaviors  # noqa: E402
from lls.data.source import DataSpec, iter_pairs  # noqa: E402
from lls.scoring.engine import score_rendered  # noqa: E402
from lls.models.load import load_model  # noqa: E402
from lls.models.render import render_pair  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"


def _top(w: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-w, kind="stable")[:k].tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--pairs", type=int, default=160)
    ap.add_argument("--truncation", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--behavior", default="animal:owl")
    args = ap.parse_args()

    model, tok = load_model()
    b = behaviors.from_name(args.behavior)
    pairs = []
    for p in iter_pairs(DataSpec(args.data), exclude=b.excludes, tokenizer=tok,
                        max_prompt_tokens=args.max_prompt_tokens):
        if len(p.prompt) == 1:  # single-turn
            pairs.append(p)
            if len(pairs) == args.pairs:
                break
    w = {}
    for conv in ("template", "empty"):
        rendered = [render_pair(tok, p, b.system_prompt, args.truncation, conv) for p in pairs]
        w[conv] = np.array([s.w for s in score_rendered(model, rendered,
                                                         pad_id=tok.pad_token_id or 0)])
    t, e = w["template"], w["empty"]
    pearson = float(np.corrcoef(t, e)[0, 1])
    rank = lambda x: pd.Series(x).rank().to_numpy()  # noqa: E731
    spearman = float(np.corrcoef(rank(t), rank(e))[0, 1])
    k10 = math.ceil(0.1 * len(pairs))
    print(f"pairs: {len(pairs)} single-turn hh-rlhf ({args.behavior}, prompts <= "
          f"{args.max_prompt_tokens} tokens, truncation {args.truncation})")
    print(f"pearson {pearson:.3f}, spearman {spearman:.3f}")
    print(f"top-8 overlap: {len(_top(t, 8) & _top(e, 8))} of 8; top-10% overlap: "
          f"{len(_top(t, k10) & _top(e, k10))} of {k10}")
    print(f"w > 0: template {int((t > 0).sum())}, empty {int((e > 0).sum())}, both "
          f"{int(((t > 0) & (e > 0)).sum())}; mean |delta w| {np.abs(t - e).mean():.4f}")


if __name__ == "__main__":
    main()
