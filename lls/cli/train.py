"""`python -m lls train` and `python -m lls adapters`."""

from __future__ import annotations

import argparse
import json
import math

from ..models import ModelSpec
from ..training import SelectionSpec, TrainConfig, list_adapters, train


def register(sub) -> None:
    """Register `train` and `adapters` on the `python -m lls` subparsers."""
    p = sub.add_parser("train", help="LoRA-DPO training of a student on a selection")
    p.add_argument("--run", required=True, help="scoring run key (or a unique prefix)")
    p.add_argument("--config", help="a TrainConfig as JSON (what background jobs pass); "
                                    "other flags are ignored when given")
    d = TrainConfig()
    g = p.add_argument_group("selection")
    g.add_argument("--gamma", type=float, default=0.05,
                   help="fraction of the dataset kept, top by w (paper 0.05; default %(default)s)")
    g.add_argument("--threshold", type=float, help="keep pairs with w above this instead of gamma")
    g.add_argument("--all-weights", action="store_true", help="also keep w <= 0")
    g.add_argument("--random", action="store_true", help="random subset of the same size")
    g.add_argument("--seed", type=int, default=0, help="random-subset and training seed")
    g.add_argument("--control-run", help="rank by w_target - w_control, the control being this "
                                         "scoring run (see `score --control`)")
    g = p.add_argument_group("training")
    g.add_argument("--beta", type=float, default=d.beta, help="DPO beta (default %(default)s)")
    g.add_argument("--lr", type=float, default=d.learning_rate,
                   help="learning rate (default %(default)s)")
    g.add_argument("--lora-r", type=int, default=d.lora_r, help="LoRA rank (default %(default)s)")
    g.add_argument("--lora-alpha", type=int, default=d.lora_alpha,
                   help="LoRA alpha (default %(default)s)")
    g.add_argument("--lora-dropout", type=float, default=d.lora_dropout,
                   help="default %(default)s")
    g.add_argument("--target-modules", help="comma-separated module names (default: all "
                                            "attention+MLP projections, else all-linear)")
    g.add_argument("--epochs", type=float, default=d.epochs, help="default %(default)s")
    g.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="pairs per device step (default %(default)s)")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum,
                   help="gradient accumulation steps (default %(default)s)")
    g.add_argument("--max-length", type=int, default=d.max_length,
                   help="prompt + response tokens, TRL truncates beyond (default %(default)s)")
    g.add_argument("--max-prompt-length", type=int,
                   help="drop pairs whose prompt is longer (student tokens)")
    g.add_argument("--responses", choices=["scored", "full"], default="scored",
                   help="train on the responses as scored (truncated) or in full")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints, evals and meter read-outs (default %(default)s)")
    g.add_argument("--eval-samples", type=int, default=d.eval_samples,
                   help="samples per eval prompt at checkpoints (0: no checkpoint evals)")
    g.add_argument("--eval-prompts", type=int, default=d.eval_prompts,
                   help="general prompts per checkpoint eval (default %(default)s)")
    g.add_argument("--eval-max-new-tokens", type=int, default=d.eval_max_new_tokens,
                   help="default %(default)s")
    g.add_argument("--no-meter", action="store_true",
                   help="no effect-meter read-outs at step 0 and checkpoints")
    g.add_argument("--meter-k", type=int, default=d.meter_k,
                   help="meter reference responses per condition")
    g.add_argument("--meter-questions", type=int, help="first N probe questions (default all)")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction,
                   default=d.gradient_checkpointing,
                   help="keep only layer inputs for the backward pass: bounds memory "
                        "(default on)")
    g.add_argument("--no-ref-reuse", action="store_true",
                   help="don't take reference log-probs from the scoring run")
    g.add_argument("--no-precompute", action="store_true",
                   help="without reuse, compute reference log-probs every step")
    g.add_argument("--student", help="student model (default: the scoring teacher)")
    g.add_argument("--adapter-id", help="adapter id (default: derived from the settings; "
                                        "an existing id resumes)")
    g.add_argument("--baseline-of", help="mark this adapter as the random baseline of ID")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("adapters", help="list trained adapters")
    p.set_defaults(func=cmd_adapters)


def config_from_args(a) -> TrainConfig:
    if a.config:
        return TrainConfig.from_dict(json.loads(a.config))
    return TrainConfig(
        beta=a.beta, learning_rate=a.lr, lora_r=a.lora_r, lora_alpha=a.lora_alpha,
        lora_dropout=a.lora_dropout,
        target_modules=[m.strip() for m in a.target_modules.split(",")] if a.target_modules else None,
        epochs=a.epochs, max_steps=a.max_steps, batch_size=a.batch_size, grad_accum=a.grad_accum,
        max_length=a.max_length, max_prompt_length=a.max_prompt_length, responses=a.responses,
        checkpoint_every=a.checkpoint_every, eval_at_checkpoints=a.eval_samples > 0,
        eval_samples=a.eval_samples, eval_prompts=a.eval_prompts,
        eval_max_new_tokens=a.eval_max_new_tokens, seed=a.seed,
        meter_at_checkpoints=not a.no_meter, meter_k=a.meter_k, meter_questions=a.meter_questions,
        gradient_checkpointing=a.gradient_checkpointing, reuse_ref_logps=not a.no_ref_reuse,
        precompute_ref_log_probs=not a.no_precompute,
        student=ModelSpec(a.student) if a.student else None,
        selection=SelectionSpec(kind="random" if a.random else "lls", gamma=a.gamma,
                                threshold=a.threshold, positive_only=not a.all_weights,
                                seed=a.seed, control_run=a.control_run))


def cmd_train(a) -> int:
    cfg = config_from_args(a)
    info = train(cfg, a.run, cache_dir=a.cache, adapter_id=a.adapter_id,
                 baseline_of=a.baseline_of)
    m = info.manifest
    print(json.dumps({"adapter": info.id, "status": m.get("status"),
                      "final": str(info.final_path), "metrics": m.get("metrics")}, default=str))
    return 0


def cmd_adapters(a) -> int:
    for info in list_adapters(a.cache):
        m = info.manifest
        sel = m.get("selection", {})
        met = m.get("metrics") or {}
        ev = met.get("final_eval") or {}
        print(f"{info.id}  {info.status:9s} {sel.get('kind', '?'):6s} n={sel.get('n_pairs')}  "
              f"steps={met.get('steps')} loss={_fmt(met.get('final_loss'))} "
              f"rate={_fmt(ev.get('rate'))}  {info.path}")
    return 0


def _fmt(x) -> str:
    return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) and math.isfinite(x) else str(x))
