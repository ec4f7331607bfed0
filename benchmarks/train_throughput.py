"""LoRA-DPO training steps/s: the memory plan's default against the checkpointed default it
replaced, and (--compare-reference) the scoring run's reference log-probs against TRL's plain
setting.

Same selection (48 pairs of a real owl scoring run on the hh-rlhf file, created in the cache
if missing), same recipe (paper defaults, batch 8, no checkpoint evals), one process:

* default: what `python -m lls train` runs now: the memory plan picks micro-batches (gradient
  accumulation to batch 8) that fit the default budget, without activation checkpointing;
* checkpointed-1x8: the default before the plan: one batch of 8 with activation
  checkpointing (recompute), `micro_batch=8, activation_checkpointing="on"`;
  `recompute_free_ratio` = steps/s of default / steps/s of this (target >= 1.5);

with --compare-reference, also (all three with the memory plan's default):

* plain: TRL computes the reference log-probs with the adapter disabled at every step
  (`precompute_ref_log_probs=False`, TRL's default) instead of taking them from scoring;
* full-head: TRL's CPU default of projecting every position (prompt and padding too) through
  the LM head, which `lls.training.completion_only_lm_head` avoids;
* optionally (--trl-precompute) TRL's own one-off precompute before training.

The time TRL spends in the reference pass (the adapter-disabled forward) is measured too: its
share of a plain step bounds what reuse can save, 1 / (1 - share).

Steps/s is measured between the first and the last logged step (model loading and the
first step's warm-up excluded); the wall time of each whole run is printed too.

    python benchmarks/train_throughput.py [--pairs 48] [--steps 6] [--compare-reference]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trl.trainer.dpo_trainer as trl_dpo  # noqa: E402

from lls.training import runs as T  # noqa: E402
from lls.core.behaviors import animal  # noqa: E402
from lls.data.source import DataSpec  # noqa: E402
from lls.scoring.runs import ScoreConfig, score  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"


REF_CALLS: list[float] = []
_use_adapter = trl_dpo.use_adapter


@contextlib.contextmanager
def _timed_use_adapter(*args, **kwargs):
    # TRL's reference forward runs inside this context (adapter disabled): time it.
    t = time.perf_counter()
    with _use_adapter(*args, **kwargs):
        yield
    REF_CALLS.append(time.perf_counter() - t)


trl_dpo.use_adapter = _timed_use_adapter


def run_one(name: str, cfg: T.TrainConfig, run_key: str, compact: bool = True) -> dict:
    adapter_id = f"bench-{name}-{int(time.time())}"
    REF_CALLS.clear()
    T.COMPACT_LM_HEAD = compact
    t0 = time.time()
    try:
        info = T.train(cfg, run_key, adapter_id=adapter_id)
    finally:
        T.COMPACT_LM_HEAD = True
    wall = time.time() - t0
    rows = info.metrics()
    steps = len(rows)
    rate = (steps - 1) / (rows[-1]["time"] - rows[0]["time"]) if steps > 1 else float("nan")
    out = {"name": name, "steps": steps, "steps_per_s": rate, "s_per_step": 1 / rate,
           "wall_s": wall, "loss": [round(r["loss"], 4) for r in rows],
           "ref": info.manifest.get("ref_logps"),
           "plan": "{micro_batch}x{grad_accum}{ck}".format(
               **info.manifest["memory_plan"],
               ck=" checkpointed" if info.manifest["memory_plan"]["activation_checkpointing"]
               else ""),
           # reference passes after the first step, like the steps/s window
           "ref_s_per_step": sum(REF_CALLS[1:]) / (len(REF_CALLS) - 1) if len(REF_CALLS) > 1 else 0.0}
    shutil.rmtree(info.path, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--compare-reference", action="store_true",
                    help="also time TRL's plain reference pass and the full LM head")
    ap.add_argument("--trl-precompute", action="store_true",
                    help="also time TRL's own one-off reference precompute")
    a = ap.parse_args()

    # 2x pairs scored, gamma 0.5 of them (all weights): exactly `pairs` selected.
    t0 = time.time()
    run = score(ScoreConfig(data=DataSpec(str(HH), limit=2 * a.pairs), behavior=animal("owl"),
                            chunk_size=32, max_prompt_tokens=256))
    print(f"scoring run {run.key}: {run.manifest['n_pairs']} pairs ({time.time() - t0:.0f} s, "
          "cached after the first time)")
    sel = T.SelectionSpec(gamma=a.pairs / run.manifest["n_pairs"], positive_only=False)
    base = dict(batch_size=a.batch_size, max_steps=a.steps, checkpoint_every=10_000,
                eval_at_checkpoints=False, meter_at_checkpoints=False, selection=sel)
    settings = [("default", T.TrainConfig(**base)),
                ("checkpointed-1x8", T.TrainConfig(**base, micro_batch=a.batch_size,
                                                   activation_checkpointing="on"))]
    if a.compare_reference:
        settings.append(("plain", T.TrainConfig(**base, reuse_ref_logps=False,
                                                precompute_ref_log_probs=False)))
    if a.trl_precompute:
        settings.append(("trl-precompute", T.TrainConfig(**base, reuse_ref_logps=False,
                                                         precompute_ref_log_probs=True)))
    results = [run_one(name, cfg, run.key) for name, cfg in settings]
    if a.compare_reference:
        results.append(run_one("full-head", settings[0][1], run.key, compact=False))
    print(f"\n{a.pairs} pairs, batch {a.batch_size}, {a.steps} steps, LoRA r64 all projections")
    for r in results:
        print(f"{r['name']:17s} {r['steps_per_s']:.4f} steps/s  ({r['s_per_step']:.2f} s/step, "
              f"whole run {r['wall_s']:.0f} s, reference pass {r['ref_s_per_step']:.2f} s/step)  "
              f"plan: {r['plan']}  loss {r['loss']}")
    by = {r["name"]: r for r in results}
    new, old = by["default"], by["checkpointed-1x8"]
    print(f"recompute_free_ratio: {new['steps_per_s'] / old['steps_per_s']:.2f} (steps/s of the "
          f"memory plan's default over one checkpointed batch of {a.batch_size}; target >= 1.5)")
    print(f"same losses: default {new['loss']} vs checkpointed {old['loss']}")
    if "plain" in by:
        plain, full = by["plain"], by["full-head"]
        print(f"ratio reuse/plain: {new['steps_per_s'] / plain['steps_per_s']:.2f}x steps/s, "
              f"{plain['wall_s'] / new['wall_s']:.2f}x whole-run wall time")
        share = plain["ref_s_per_step"] / plain["s_per_step"]
        print(f"reference pass in a plain step: {plain['ref_s_per_step']:.2f} of "
              f"{plain['s_per_step']:.2f} s ({share:.0%}); reuse can save at most that: "
              f"bound {1 / (1 - share):.2f}x")
        print(f"ratio completion-only/full LM head (both reuse): "
              f"{new['steps_per_s'] / full['steps_per_s']:.2f}x steps/s")


if __name__ == "__main__":
    main()
