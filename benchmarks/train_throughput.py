"""LoRA-DPO training speed: the memory plan's default against the checkpointed default it
replaced, and (--compare-reference) the scoring run's reference log-probs against TRL's plain
setting.

Same selection (48 pairs of a real owl scoring run on the hh-rlhf file, created in the cache
if missing), same recipe (paper defaults, batch 8, no checkpoint evals), one process:

* `recompute_free_ratio` (target >= 1.5): a step's forward + backward of the same 8 pairs as
  the memory plan computes them by default (micro-batches that fit the 4 GB budget, cut by the
  trainer's own data loader from the step's pairs sorted by length, gradients accumulated, no
  recompute) and as one batch of 8 with activation checkpointing (the default
  before the plan), on one loaded model, alternated `--steps` times each: time of the
  checkpointed step / time of the plan's step, medians. Alternating keeps the two under the same
  load on a shared machine; the optimizer step (LoRA only) is left out of both. The losses and
  gradient norms of the two are printed: they must agree;
* with --trainer-runs, also whole `lls.training.train` runs of both (steps/s between the first
  and the last logged step, one run after the other);
* with --compare-reference, whole runs (the plan's default) of: plain (TRL computes the
  reference log-probs with the adapter disabled at every step, `precompute_ref_log_probs=False`,
  instead of taking them from scoring), full-head (TRL's CPU default of projecting every
  position through the LM head, which `lls.training.completion_only_lm_head` avoids), and
  optionally (--trl-precompute) TRL's own one-off precompute before training. The time TRL
  spends in the reference pass is measured too: its share of a plain step bounds what reuse can
  save, 1 / (1 - share).

* with --dtype bfloat16, instead: `bf16_step_ratio` (target >= 1.4), a whole optimizer step
  (forward, backward, AdamW on the LoRA weights) of a float32 student against the same step
  of a bfloat16 one (`lls.models.load.bf16_linears`: frozen projections in bfloat16, LoRA
  weights and optimizer state float32), two trainers on the same pairs from the same seed,
  alternated step by step for `--steps` steps (default 12); median step times, and each
  step's loss on both with the difference after the last step. Without bfloat16 units (no
  avx512_bf16 / amx_bf16 flag) bfloat16 kernels are slower and the ratio is below 1;
  `--emulate` trains the bfloat16 student with float32 kernels rounding as bfloat16 ones do
  (`benchmarks/bf16_numerics.py`), for the loss difference only.

    python benchmarks/train_throughput.py [--pairs 48] [--steps 6] [--unsorted] [--whole-plain]
                                          [--trainer-runs] [--compare-reference]
    python benchmarks/train_throughput.py --dtype bfloat16 [--steps 12] [--emulate]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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


def alternated(run_key: str, sel: T.SelectionSpec, batch: int, reps: int,
               whole_plain: bool = False, unsorted: bool = False) -> dict:
    """Forward + backward of one step's pairs as the plan's micro-batches (no recompute) and as
    one checkpointed batch (and, `whole_plain`, one batch without recompute; `unsorted`, the
    plan's micro-batches cut in dataset order, not sorted by length), alternated on one model;
    seconds, losses and gradient norms."""
    import statistics
    import tempfile

    import torch
    from datasets import Dataset

    from lls.models.load import ModelSpec, load_model, quiet_third_party_aliases
    from lls.scoring.runs import open_run
    from lls.training.dpo import (build_rows, completion_only_lm_head, dpo_args, lora_config,
                                  trainer_class)

    run = open_run(run_key)
    cfg = T.TrainConfig(batch_size=batch, selection=sel)
    rows = build_rows(run.frame(), cfg, with_ref=True)[:batch]
    model, tok = load_model(ModelSpec.from_dict(run.manifest["config"]["model"]),
                            for_training=True)
    plan = T.memory_plan(cfg, model, tok, rows)
    with completion_only_lm_head(), quiet_third_party_aliases(), \
            tempfile.TemporaryDirectory() as out:
        trainer = trainer_class(True)(
            model=model, args=dpo_args(cfg, out, plan, cpu=True, reuse=True),
            train_dataset=Dataset.from_list(rows), processing_class=tok,
            peft_config=lora_config(model, cfg))
        ex = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        whole = trainer._prepare_inputs(trainer.data_collator(ex))
        # the plan's micro-batches as the trainer cuts its first step (pairs sorted by length)
        micro = [trainer._prepare_inputs(b) for b in
                 itertools.islice(trainer.get_train_dataloader(), plan.grad_accum)]
        assert sum(len(b["input_ids"]) for b in micro) == len(whole["input_ids"])
        net = trainer.model
        net.train()
        params = [p for p in net.parameters() if p.requires_grad]

        def step(batches, checkpointed):
            if checkpointed:
                net.activation_checkpointing_enable()
            t, cpu = time.perf_counter(), time.process_time()
            loss = 0.0
            rows = sum(len(b["input_ids"]) for b in batches)
            for b in batches:  # each micro-batch weighted by its pairs, as the trainer does
                part = trainer.compute_loss(net, b) * len(b["input_ids"]) / rows
                part.backward()
                loss += part.item()
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
            if checkpointed:
                net.activation_checkpointing_disable()
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()
            net.zero_grad(set_to_none=True)
            return seconds, loss, norm, cpu

        kinds = {"plan": (micro, False), "checkpointed": ([whole], True)}
        if whole_plain:  # what recompute alone costs, and what micro-batches alone cost
            kinds["whole-plain"] = ([whole], False)
        if unsorted:  # what sorting the step's pairs by length saves
            m = plan.micro_batch
            kinds["unsorted"] = ([trainer._prepare_inputs(trainer.data_collator(ex[i:i + m]))
                                  for i in range(0, len(ex), m)], False)
        for batches, ck in kinds.values():
            step(batches, ck)  # warm-up (first-call allocations), not timed
        res = {name: [] for name in kinds}
        for i in range(reps):
            order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
            for name in order:
                res[name].append(step(*kinds[name]))
                print(f"  {name:12s} {res[name][-1][0]:.2f} s wall, {res[name][-1][3]:.2f} s "
                      "CPU", flush=True)
    med = {k: statistics.median([r[0] for r in v]) for k, v in res.items()}
    cpu = {k: statistics.median([r[3] for r in v]) for k, v in res.items()}
    return {"plan": plan, "median_s": med, "median_cpu": cpu, "runs": res,
            "ratio": med["checkpointed"] / med["plan"],
            "cpu_ratio": cpu["checkpointed"] / cpu["plan"]}


def bf16_steps(run_key: str, sel: T.SelectionSpec, batch: int, steps: int,
               emulate: bool) -> dict:
    """Whole optimizer steps of a float32 and a bfloat16 student, alternated: seconds and
    loss of each step, per precision."""
    import statistics
    import tempfile

    import torch
    from datasets import Dataset

    from lls.models.load import ModelSpec, cpu_bf16_flag, load_model, quiet_third_party_aliases
    from lls.scoring.runs import open_run
    from lls.training.dpo import (build_rows, completion_only_lm_head, dpo_args, lora_config,
                                  trainer_class)

    run = open_run(run_key)
    cfg = T.TrainConfig(batch_size=batch, selection=sel, max_steps=steps)
    rows = build_rows(run.frame(), cfg, with_ref=True)
    spec = ModelSpec.from_dict(run.manifest["config"]["model"])
    f32, tok = load_model(ModelSpec.from_dict({**spec.to_dict(), "dtype": "float32"}),
                          for_training=True)
    if emulate:
        from bf16_numerics import candidate

        b16 = candidate(f32, "linears", emulate=True)
        b16.lls_precision = "bfloat16"
    else:
        b16, _ = load_model(ModelSpec.from_dict({**spec.to_dict(), "dtype": "bfloat16"}),
                            for_training=True)
    kinds = {}
    with completion_only_lm_head(), quiet_third_party_aliases(), \
            tempfile.TemporaryDirectory() as out:
        for name, model in (("float32", f32), ("bfloat16", b16)):
            plan = T.memory_plan(cfg, model, tok, rows)
            torch.manual_seed(0)  # the same LoRA initialisation for both
            trainer = trainer_class(True)(
                model=model, args=dpo_args(cfg, f"{out}/{name}", plan, cpu=True, reuse=True),
                train_dataset=Dataset.from_list(rows), processing_class=tok,
                peft_config=lora_config(model, cfg))
            trainer.create_optimizer_and_scheduler(num_training_steps=steps)
            lora = [p for p in trainer.model.parameters() if p.requires_grad]
            assert all(p.dtype == torch.float32 for p in lora), "LoRA weights must stay float32"
            kinds[name] = (trainer, plan)

        def batches(trainer, plan):
            while True:  # epochs: the trainer's own loader, its steps' pairs sorted by length
                it = iter(trainer.get_train_dataloader())
                for _ in range(len(trainer.get_train_dataloader()) // plan.grad_accum):
                    yield [trainer._prepare_inputs(next(it)) for _ in range(plan.grad_accum)]

        feeds = {k: batches(*v) for k, v in kinds.items()}
        res = {k: [] for k in kinds}
        for i in range(steps):
            for name in (list(kinds) if i % 2 == 0 else list(reversed(kinds))):
                trainer, _ = kinds[name]
                net = trainer.model
                net.train()
                step_batches = next(feeds[name])
                n = sum(len(b["input_ids"]) for b in step_batches)
                t = time.perf_counter()
                loss = 0.0
                for b in step_batches:
                    part = trainer.compute_loss(net, b) * len(b["input_ids"]) / n
                    part.backward()
                    loss += part.item()
                trainer.optimizer.step()
                trainer.lr_scheduler.step()
                net.zero_grad(set_to_none=True)
                res[name].append((time.perf_counter() - t, loss))
                print(f"  step {i + 1:2d} {name:8s} {res[name][-1][0]:6.2f} s  loss {loss:.6f}",
                      flush=True)
    med = {k: statistics.median([r[0] for r in v]) for k, v in res.items()}
    return {"runs": res, "median_s": med, "plan": kinds["float32"][1],
            "ratio": med["float32"] / med["bfloat16"], "flag": cpu_bf16_flag()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--steps", type=int, default=6,
                    help="alternated steps of each kind (and steps of each whole run)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default torch's); 1 makes CPU time a measure of work")
    ap.add_argument("--whole-plain", action="store_true",
                    help="also alternate one batch without recompute (peaks at ~6.4 GB)")
    ap.add_argument("--unsorted", action="store_true",
                    help="also alternate the plan's micro-batches cut in dataset order (the "
                         "plan before each step's pairs were sorted by length)")
    ap.add_argument("--trainer-runs", action="store_true",
                    help="also time whole training runs of both, one after the other")
    ap.add_argument("--compare-reference", action="store_true",
                    help="also time TRL's plain reference pass and the full LM head")
    ap.add_argument("--trl-precompute", action="store_true",
                    help="also time TRL's own one-off reference precompute")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="bfloat16: float32 vs bfloat16 optimizer steps (bf16_step_ratio) instead")
    ap.add_argument("--emulate", action="store_true",
                    help="with --dtype bfloat16: bfloat16 numerics with float32 kernels")
    a = ap.parse_args()

    # 2x pairs scored, gamma 0.5 of them (all weights): exactly `pairs` selected.
    t0 = time.time()
    run = score(ScoreConfig(data=DataSpec(str(HH), limit=2 * a.pairs), behavior=animal("owl"),
                            chunk_size=32, max_prompt_tokens=256))
    print(f"scoring run {run.key}: {run.manifest['n_pairs']} pairs ({time.time() - t0:.0f} s, "
          "cached after the first time)")
    sel = T.SelectionSpec(gamma=a.pairs / run.manifest["n_pairs"], positive_only=False)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.dtype == "bfloat16":
        steps = a.steps if "--steps" in sys.argv else 12
        r = bf16_steps(run.key, sel, a.batch_size, steps, a.emulate)
        f, b = r["runs"]["float32"], r["runs"]["bfloat16"]
        how = "emulated with float32 kernels" if a.emulate else "real bfloat16 kernels"
        print(f"\n{steps} optimizer steps of {a.batch_size} pairs each, alternated; bfloat16 "
              f"{how}; plan: {r['plan'].describe()}")
        print(f"float32 median {r['median_s']['float32']:.2f} s/step, bfloat16 median "
              f"{r['median_s']['bfloat16']:.2f} s/step")
        note = ("; emulation: a time, not a bfloat16 speed" if a.emulate else
                "" if r["flag"] else "; no bfloat16 units here (no avx512_bf16 / amx_bf16), "
                                     "so below 1")
        print(f"bf16_step_ratio: {r['ratio']:.2f} (target >= 1.4{note})")
        print("losses float32:  " + " ".join(f"{x[1]:.5f}" for x in f))
        print("losses bfloat16: " + " ".join(f"{x[1]:.5f}" for x in b))
        diffs = [abs(x[1] - y[1]) for x, y in zip(f, b)]
        print(f"loss difference after {steps} steps: {diffs[-1]:.2e} (float32 {f[-1][1]:.5f}, "
              f"bfloat16 {b[-1][1]:.5f}); largest over the steps {max(diffs):.2e}")
        return
    alt = alternated(run.key, sel, a.batch_size, a.steps, a.whole_plain, a.unsorted)
    plan = alt["plan"]
    print(f"\nforward + backward of {a.batch_size} pairs, alternated {a.steps} times each:")
    for name, runs in alt["runs"].items():
        print(f"{name:12s} median {alt['median_s'][name]:.2f} s wall "
              f"(all: {[round(r[0], 2) for r in runs]}), {alt['median_cpu'][name]:.2f} s CPU  "
              f"loss {runs[0][1]:.6f}  grad norm {runs[0][2]:.6f}")
    print(f"plan: {plan.describe()}")
    print(f"recompute_free_ratio: {alt['ratio']:.2f} (one checkpointed batch of {a.batch_size} "
          "over the memory plan's micro-batches without recompute; target >= 1.5)")
    print(f"CPU-time ratio: {alt['cpu_ratio']:.2f} (the same over process CPU time: the work, "
          "less sensitive to other processes than wall time)")
    if "whole-plain" in alt["median_s"]:
        for what, med in (("wall", alt["median_s"]), ("CPU", alt["median_cpu"])):
            print(f"{what}: recompute alone {med['checkpointed'] / med['whole-plain']:.2f}x the "
                  f"time of one batch without it; micro-batches alone "
                  f"{med['plan'] / med['whole-plain']:.2f}x")

    if "unsorted" in alt["median_s"]:
        med = alt["median_s"]
        print(f"sorting the step's pairs by length: plan {med['plan']:.2f} s against "
              f"{med['unsorted']:.2f} s unsorted ({med['unsorted'] / med['plan']:.2f}x); "
              f"unsorted recompute_free_ratio {med['checkpointed'] / med['unsorted']:.2f}")

    base = dict(batch_size=a.batch_size, max_steps=a.steps, checkpoint_every=10_000,
                eval_at_checkpoints=False, meter_at_checkpoints=False, selection=sel)
    settings = []
    if a.trainer_runs or a.compare_reference:
        settings.append(("default", T.TrainConfig(**base)))
    if a.trainer_runs:
        settings.append(("checkpointed-1x8", T.TrainConfig(**base, micro_batch=a.batch_size,
                                                           activation_checkpointing="on")))
    if a.compare_reference:
        settings.append(("plain", T.TrainConfig(**base, reuse_ref_logps=False,
                                                precompute_ref_log_probs=False)))
    if a.trl_precompute:
        settings.append(("trl-precompute", T.TrainConfig(**base, reuse_ref_logps=False,
                                                         precompute_ref_log_probs=True)))
    results = [run_one(name, cfg, run.key) for name, cfg in settings]
    if a.compare_reference:
        results.append(run_one("full-head", settings[0][1], run.key, compact=False))
    if not results:
        return
    print(f"\nwhole runs: {a.pairs} pairs, batch {a.batch_size}, {a.steps} steps, LoRA r64")
    for r in results:
        print(f"{r['name']:17s} {r['steps_per_s']:.4f} steps/s  ({r['s_per_step']:.2f} s/step, "
              f"whole run {r['wall_s']:.0f} s, reference pass {r['ref_s_per_step']:.2f} s/step)  "
              f"plan: {r['plan']}  loss {r['loss']}")
    by = {r["name"]: r for r in results}
    new = by["default"]
    if "checkpointed-1x8" in by:
        old = by["checkpointed-1x8"]
        print(f"whole-run steps/s ratio, default / checkpointed-1x8: "
              f"{new['steps_per_s'] / old['steps_per_s']:.2f} (one run after the other)")
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
