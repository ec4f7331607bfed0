"""`python -m lls eval`: the paper's sampled behavior evaluation, with the meter beside it."""

from __future__ import annotations

import json
from dataclasses import replace

from ..core.distributed import process_info
from ..core.prompts import GENERAL_PROMPTS
from ..evaluation.runs import EvalConfig, EvalModel, evaluate
from ..training.adapters import adapter_dir
from .common import (add_behavior_args, add_model_args, add_teacher_args, alias, model_spec,
                     teacher)


def register(sub) -> None:
    """Add `eval` to the `python -m lls` subparsers."""
    p = sub.add_parser("eval", help="sample answers and measure the behavior (paper protocol)")
    p.add_argument("--config", help="an EvalConfig as JSON (what background jobs pass); other "
                                    "flags are ignored when given")
    add_behavior_args(p, filters="answers")
    add_model_args(p)
    add_teacher_args(p)
    g = p.add_argument_group("sampled evaluation")
    g.add_argument("--prompt", action="append", help="a prompt to sample answers to (repeatable; "
                   "default: 10 general questions)")
    g.add_argument("--samples", type=int, default=100,
                   help="answers sampled per prompt and model (default: 100, as in the "
                        "paper)")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    g.add_argument("--max-new-tokens", type=int, default=96, help="new tokens per answer")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g = p.add_argument_group("models (base, teacher and adapters side by side)")
    g.add_argument("--no-base", action="store_true", help="skip the base model")
    g.add_argument("--no-system", action="store_true",
                   help="skip the teacher (base + system prompt, or the --teacher-... given)")
    g.add_argument("--adapter", action="append", default=[],
                   help="a trained adapter id or an adapter/checkpoint directory (repeatable)")
    g.add_argument("--random-adapter", action="append", default=[],
                   help="a random twin's adapter id or directory (repeatable)")
    p.add_argument("--out", help="also export results (.csv answers, .json summary)")
    g = p.add_argument_group("effect meter (log-probability read-outs after sampling)")
    g.add_argument("--no-meter", action="store_true", help="skip the effect meter")
    alias(g, g.add_argument("--reference-responses", type=int, default=64,
                            help="likelihood ratio: reference responses sampled per "
                                 "condition (with and without the system prompt)"),
          "--meter-k")
    alias(g, g.add_argument("--questions", type=int,
                            help="read-out questions used: the first N (default: all)"),
          "--meter-questions")
    alias(g, g.add_argument("--reference-tokens", type=int, default=48,
                            help="likelihood ratio: new tokens per reference response"),
          "--meter-max-new-tokens")
    alias(g, g.add_argument("--prefill-samples", type=int, default=10,
                            help="prefilled read-out: answers per question, the reply begun "
                                 "by the behavior's stem (0: off)"),
          "--meter-prefill")

    def run(a) -> int:
        if a.config:
            cfg = EvalConfig.from_dict(json.loads(a.config))
        else:
            models = ([] if a.no_base else [EvalModel("base")]) + \
                     ([] if a.no_system else [EvalModel("system")]) + \
                     [EvalModel("adapter", path=adapter_dir(x, a.cache)) for x in a.adapter] + \
                     [EvalModel("random", path=adapter_dir(x, a.cache)) for x in a.random_adapter]
            b, trait = teacher(a)
            if trait is not None:  # the teacher row in the user's words
                models = [EvalModel("system", label=f"teacher: {trait.label()}")
                          if m.kind == "system" else m for m in models]
            cfg = EvalConfig(behavior=b, prompts=tuple(a.prompt or GENERAL_PROMPTS),
                             samples=a.samples, temperature=a.temperature,
                             max_new_tokens=a.max_new_tokens, seed=a.seed, model=model_spec(a),
                             models=tuple(models), meter=not a.no_meter,
                             meter_k=a.reference_responses, meter_questions=a.questions,
                             meter_max_new_tokens=a.reference_tokens,
                             meter_prefill=a.prefill_samples, teacher=trait)
        proc = process_info()  # rank 0 of 1 unless started by `accelerate launch`
        if proc.device and not cfg.model.device:
            cfg = replace(cfg, model=replace(cfg.model, device=proc.device))
        res = evaluate(cfg, cache_dir=a.cache, rank=proc.rank, world_size=proc.world_size)
        if not proc.is_main:
            return 0  # rank 0 merges, finalises and reports
        if getattr(a, "out", None):
            res.export(a.out)
        summary = res.summary()[["model", "n", "k", "rate", "ci_low", "ci_high", "mean_score"]]
        meter = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                  if k in ("label", "llr", "llr_ci_low", "llr_ci_high", "gap_closed", "margin",
                           "margin_ci_low", "margin_ci_high", "prefill_k", "prefill_n",
                           "prefill_share", "prefill_ci_low", "prefill_ci_high", "lens_p")}
                 for r in res.meter_rows()]
        print(json.dumps({"eval": res.key, "path": str(res.path),
                          "status": res.manifest.get("status"),
                          "summary": summary.round(4).to_dict("records"),
                          "meter": meter or None}, ensure_ascii=False))
        return 0

    p.set_defaults(func=run)
