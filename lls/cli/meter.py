"""`python -m lls meter`: the effect meter's log-probability read-outs as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ..evaluation.llr import LLRConfig
from ..evaluation.meter import meter_models, summary_rows
from ..evaluation.prefill import prefill_config
from ..evaluation.probe import probe_config
from ..training.adapters import adapter_dir
from .common import add_behavior_args, add_model_args, alias, behavior, model_spec


def register(sub) -> None:
    """Register `python -m lls meter` on the CLI subparsers."""
    p = sub.add_parser("meter", help="log-probability read-outs of the behavior (effect meter)")
    add_behavior_args(p, filters="answers")
    add_model_args(p)
    p.add_argument("--adapter", action="append", default=[],
                   help="an adapter/checkpoint directory or adapter id (repeatable)")
    p.add_argument("--questions", type=int,
                   help="read-out questions used: the first N (default: all)")
    p.add_argument("--candidates", help="comma-separated one-word answers the probe compares, "
                                        "the target first (default: the bundled animals)")
    alias(p, p.add_argument("--reference-responses", type=int, default=64,
                            help="likelihood ratio: reference responses sampled per condition "
                                 "(with and without the system prompt)"), "--k")
    alias(p, p.add_argument("--reference-tokens", type=int, default=48,
                            help="likelihood ratio: new tokens per reference response"),
          "--max-new-tokens")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--prefill-samples", type=int, default=10,
                   help="prefilled read-out: answers per question, the reply begun by the "
                        "behavior's stem (0: off)")
    p.add_argument("--stem", help="prefilled read-out: begin the reply with this text "
                                  "(default: the behavior's stem)")
    p.add_argument("--out", help="write the full JSON here (default: print it)")
    p.set_defaults(func=cmd_meter)


def cmd_meter(a) -> int:
    """Read out base, base + system prompt and the adapters; print or write the JSON."""
    b = behavior(a)
    probe = probe_config(a.questions, a.candidates.split(",") if a.candidates else None)
    if b.kind != "animal":
        probe = False if not a.candidates else probe
    llr = LLRConfig(k=a.reference_responses, max_new_tokens=a.reference_tokens,
                    seed=a.seed)
    prefill = prefill_config(b, a.questions, a.prefill_samples, a.seed, a.stem)
    res = meter_models(model_spec(a), b, [adapter_dir(x, a.cache) for x in a.adapter], probe=probe,
                       llr=llr, cache_dir=a.cache, prefill=prefill)
    text = json.dumps(res, ensure_ascii=False, indent=1)
    if a.out:
        Path(a.out).write_text(text)
        print(json.dumps({"out": a.out, "summary": summary_rows(res)}, ensure_ascii=False))
    else:
        print(text)
    return 0
