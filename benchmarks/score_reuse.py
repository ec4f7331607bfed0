"""A second behavior on the same pairs reuses the neutral half (`lls.scoring.neutral`): speed-up.

Scores behavior A (owl), then behavior B (cat) on the same hh-rlhf pairs into one fresh
temporary cache: B's run finds the neutral half of every pair A kept in the neutral cache and
only runs its half with the system prompt. Then scores B from scratch into a second fresh
cache (no neutral cache). Prints both runs' wall time (model loaded once, outside the
clocks), `ratio` = time(A) / time(B with reuse) (target >= 1.8: at best 2, the half with s
is a little longer than the neutral half) and max |delta w| of B with reuse against B from
scratch (target <= 1e-6).

    python benchmarks/score_reuse.py [--pairs 96] [--truncation 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lls.core import behaviors  # noqa: E402
from lls.data.source import DataSpec  # noqa: E402
from lls.models.load import load_model  # noqa: E402
from lls.scoring.runs import ScoreConfig, score  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--truncation", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--first", default="animal:owl")
    ap.add_argument("--second", default="animal:cat")
    args = ap.parse_args()

    model, tok = load_model()
    kw = {"model": model, "tokenizer": tok}

    def cfg(name: str) -> ScoreConfig:
        return ScoreConfig(DataSpec(args.data, limit=args.pairs), behaviors.from_name(name),
                           truncation=args.truncation, max_prompt_tokens=args.max_prompt_tokens)

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b, \
            tempfile.TemporaryDirectory() as warm:
        # Warm-up (allocator, kernels) outside the clocks, so the first run is not penalised.
        score(replace(cfg(args.first), data=DataSpec(args.data, limit=4)), cache_dir=Path(warm),
              **kw)
        t0 = time.perf_counter()
        first = score(cfg(args.first), cache_dir=Path(a), **kw)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = score(cfg(args.second), cache_dir=Path(a), **kw)
        t_second = time.perf_counter() - t0
        t0 = time.perf_counter()
        scratch = score(cfg(args.second), cache_dir=Path(b), **kw)
        t_scratch = time.perf_counter() - t0
        f1, f2, f3 = first.frame(), second.frame(), scratch.frame()

    assert list(f2["id"]) == list(f3["id"])
    dw = float((f2["w"] - f3["w"]).abs().max())
    shared = len(set(f1["id"]) & set(f2["id"]))
    print(f"pairs: {len(f1)} ({args.first}), {len(f2)} ({args.second}), {shared} in both "
          f"(hh-rlhf, prompts <= {args.max_prompt_tokens} tokens, truncation {args.truncation})")
    print(f"first run ({args.first}, both halves):       {t_first:.1f} s")
    print(f"second run ({args.second}, neutral cached): {t_second:.1f} s")
    print(f"second from scratch (no neutral cache):    {t_scratch:.1f} s")
    print(f"ratio first/second: {t_first / t_second:.2f} (target >= 1.8); "
          f"scratch/second: {t_scratch / t_second:.2f}")
    print(f"max |delta w| second vs scratch: {dw:.2e} (target <= 1e-6)")


if __name__ == "__main__":
    main()
