"""What storing per-token deltas costs a scoring run (`lls.scoring.deltas`): time and bytes.

Scores the same hh-rlhf pairs with and without per-token deltas, in the same process with
the model loaded once, each into a fresh cache, in ABBA order (without, with, with,
without) per round so a drift in machine load hits both alike:
- a first behavior (owl): both halves computed;
- a second behavior (cat) on a neutral cache the first filled: only its half with s runs
  (with deltas, the neutral per-token values come from the cache).
Prints `ratio` = time with deltas / time without (target <= 1.15 for both), wall clock and
this process's CPU time (one torch thread: CPU time is what other jobs on a shared machine
disturb least). On a busy machine the wall-clock ratio moves by more than the cost itself,
so two direct figures follow: the seconds spent in the code deltas add to a run (building, writing and looking up
per-token values, timed inside the runs with deltas) as a share of those runs' time, and the
engine alone with per-token values on and off on the same pairs, alternated. Then the bytes
of the run's chunks and of its deltas, and the time a backfill of a run scored without deltas
takes (`lls.scoring.backfill`: both halves again) against scoring it.

    python benchmarks/deltas_cost.py [--pairs 96] [--rounds 2] [--truncation 32]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lls.scoring.runs as runs_module  # noqa: E402
from lls.core import behaviors  # noqa: E402
from lls.data.source import DataSpec  # noqa: E402
from lls.models.load import load_model  # noqa: E402
from lls.models.render import render_pair  # noqa: E402
from lls.scoring.backfill import backfill  # noqa: E402
from lls.scoring.deltas import storage_bytes  # noqa: E402
from lls.scoring.engine import score_rendered  # noqa: E402
from lls.data.source import iter_pairs  # noqa: E402
from lls.scoring.runs import ScoreConfig, score  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--truncation", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    args = ap.parse_args()

    model, tok = load_model()
    kw = {"model": model, "tokenizer": tok}

    def cfg(name: str) -> ScoreConfig:
        return ScoreConfig(DataSpec(args.data, limit=args.pairs), behaviors.from_name(name),
                           truncation=args.truncation, max_prompt_tokens=args.max_prompt_tokens)

    def timed(name: str, cache: Path, deltas: bool):
        t0, c0 = time.perf_counter(), time.process_time()
        run = score(cfg(name), cache_dir=cache, deltas=deltas, **kw)
        return time.perf_counter() - t0, time.process_time() - c0, run

    times = {(b, d): 0.0 for b in ("first", "second") for d in (False, True)}
    cpu = dict.fromkeys(times, 0.0)
    sizes = None
    in_deltas_code = [0.0]
    for name in ("deltas_table", "write_deltas", "known_with_tokens"):
        setattr(runs_module, name, _clocked(getattr(runs_module, name), in_deltas_code))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Warm-up (allocator, kernels) outside the clocks.
        score(replace(cfg("animal:owl"), data=DataSpec(args.data, limit=4)),
              cache_dir=tmp / "warm", **kw)
        for r in range(args.rounds):
            for i, deltas in enumerate((False, True, True, False)):
                cache = tmp / f"r{r}-{i}"
                t1, c1, run = timed("animal:owl", cache, deltas)
                t2, c2, second = timed("animal:cat", cache, deltas)
                times[("first", deltas)] += t1
                times[("second", deltas)] += t2
                cpu[("first", deltas)] += c1
                cpu[("second", deltas)] += c2
                if deltas and sizes is None:
                    sizes = storage_bytes(run), run.manifest["n_pairs"]
                if not deltas and r == 0 and i == 0:
                    plain = run
        t0 = time.perf_counter()
        summary = backfill(plain, model=model, tokenizer=tok, cache_dir=tmp / "r0-0")
        t_backfill = time.perf_counter() - t0
    engine = _engine_ab(model, tok, args, pairs=min(args.pairs, 16), repeats=args.rounds)

    (run_bytes, delta_bytes), n = sizes
    per_run = times[("first", False)] / (2 * args.rounds)
    print(f"# {_dt.date.today()} · {platform.machine()} · {platform.processor() or '?'} · "
          f"torch threads from OMP_NUM_THREADS · python benchmarks/deltas_cost.py "
          + " ".join(sys.argv[1:]))
    print(f"pairs: {n} (hh-rlhf, prompts <= {args.max_prompt_tokens} tokens, truncation "
          f"{args.truncation}); {args.rounds} round(s) of ABBA, each run in a fresh cache")
    for b, what in (("first", "owl, both halves"), ("second", "cat, neutral half cached")):
        t0, t1 = times[(b, False)], times[(b, True)]
        print(f"{b} run ({what}): without deltas {t0 / (2 * args.rounds):.1f} s, with "
              f"{t1 / (2 * args.rounds):.1f} s; ratio {t1 / t0:.3f} (target <= 1.15); "
              f"CPU time of this process: ratio {cpu[(b, True)] / cpu[(b, False)]:.3f}")
    t_with = times[("first", True)] + times[("second", True)]
    print(f"time in the code deltas add (build, write, look up per-token values): "
          f"{in_deltas_code[0]:.2f} s of {t_with:.1f} s of runs with deltas "
          f"({in_deltas_code[0] / t_with:.2%})")
    print(f"engine alone, per-token values on / off (same {engine[2]} pairs, {engine[3]} "
          f"alternations): {engine[1]:.1f} s / {engine[0]:.1f} s, ratio "
          f"{engine[1] / engine[0]:.3f}")
    print(f"storage: run chunks {run_bytes:,} B, deltas {delta_bytes:,} B "
          f"({delta_bytes / max(n, 1):.0f} B per pair, {delta_bytes / max(run_bytes, 1):.0%} of "
          "the run's chunks)")
    print(f"backfill of a run scored without deltas (both halves again): {t_backfill:.1f} s, "
          f"{t_backfill / per_run:.2f} x scoring it; max |w recomputed - w stored| "
          f"{summary['max_w_diff']:.1e}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def _clocked(fn, total: list):
    def timed_fn(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            total[0] += time.perf_counter() - t0
    return timed_fn


def _engine_ab(model, tok, args, pairs: int = 16, repeats: int = 3):
    """(seconds without, seconds with per-token values, pairs, alternations): the engine on
    the same rendered pairs, off and on alternated."""
    items = [render_pair(tok, p, behaviors.animal("owl").system_prompt, args.truncation)
             for p in iter_pairs(DataSpec(args.data, limit=pairs), tokenizer=tok,
                                 max_prompt_tokens=args.max_prompt_tokens)]
    spent = {False: 0.0, True: 0.0}
    for _ in range(repeats):
        for per_token in (False, True, True, False):
            t0 = time.perf_counter()
            score_rendered(model, items, pad_id=tok.pad_token_id or 0, per_token=per_token)
            spent[per_token] += time.perf_counter() - t0
    return spent[False], spent[True], len(items), repeats * 2


if __name__ == "__main__":
    main()
