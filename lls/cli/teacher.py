"""`python -m lls teacher-check` (how strongly each candidate teacher shows the behavior) and
`python -m lls trait` (make a trait adapter: a teacher whose trait is in its weights)."""

from __future__ import annotations

import json

from ..evaluation.strength import DEFAULT_QUESTIONS, DEFAULT_SAMPLES, teacher_strength
from ..models.load import load_model
from ..models.teacher import Teacher
from ..training.trait import TraitConfig, make_trait
from .common import (add_behavior_args, add_model_args, add_teacher_args, alias, behavior,
                     model_spec)


def register(sub) -> None:
    """Register `teacher-check` and `trait` on the CLI subparsers."""
    register_trait(sub)
    p = sub.add_parser("teacher-check",
                       help="how strongly each candidate teacher shows the behavior (the "
                            "ceiling a student can reach), before any scoring")
    add_behavior_args(p, filters="answers")
    add_model_args(p)
    add_teacher_args(p, many=True)
    p.add_argument("--questions", type=int, default=DEFAULT_QUESTIONS,
                   help="read-out questions asked")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help="sampled next words per question")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--stem", help="begin the reply with this text (default: the behavior's "
                                  "stem, e.g. 'My favorite animal is the')")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (base_lens, teacher_lens, intervals, shares)")
    p.set_defaults(func=cmd_teacher_check)


def teachers_of(a) -> list:
    """The candidate teachers in the order given: prompts first, then adapters, models;
    the behavior's own prompt when none is given."""
    out: list = list(a.teacher_prompt or [])
    out += [Teacher("adapter", d) for d in a.teacher_adapter or []]
    out += [Teacher("model", m) for m in a.teacher_model or []]
    return out or [Teacher()]


def cmd_teacher_check(a) -> int:
    b = behavior(a)
    teachers = teachers_of(a)  # checks adapter directories before the model loads
    model, tok = load_model(model_spec(a))
    res = teacher_strength(model, tok, b, teachers, questions=a.questions,
                           samples=a.samples, seed=a.seed, stem=a.stem)
    if a.json:
        slim = {**res, "base": _slim(res["base"]), "teachers": [_slim(r) for r in res["teachers"]]}
        print(json.dumps(slim, ensure_ascii=False))
        return 0
    print(format_table(res))
    return 0


def _slim(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("lens_per_question", "examples")}


def format_table(res: dict) -> str:
    """The check as a plain-text table and its verdict."""
    target = res["target"]
    lines = [f"teacher strength: {res['behavior']}, reply begun \"{res['stem']} ...\", "
             f"{res['questions']} questions x {res['samples']} samples",
             f"{'P(next word = ' + target + ')':>26}  {'sampled':>14}  who"]
    for r in [res["base"], *res["teachers"]]:
        lo, hi = r["lens_ci"]
        lines.append(f"{r['lens']:>8.1%} [{lo:.1%}, {hi:.1%}]  {r['k']:>5}/{r['n']:<4} "
                     f"{r['share']:>4.0%}  {r['label']}")
    lines.append(res["verdict"])
    return "\n".join(lines)


def register_trait(sub) -> None:
    """Register `trait`: make a trait adapter (a teacher whose trait is in its weights)."""
    p = sub.add_parser("trait", help="give a teacher the trait in its weights: a LoRA adapter "
                                     "distilled from a system prompt, or trained on your "
                                     "examples")
    p.add_argument("--config", help="a TraitConfig as JSON (what background jobs pass); other "
                                    "flags are ignored when given")
    add_behavior_args(p, filters="answers")
    add_model_args(p)
    p.add_argument("--teacher-prompt", metavar="TEXT",
                   help="the system prompt to distil (default: the behavior's)")
    p.add_argument("--examples", metavar="FILE",
                   help="train on these prompt -> response records instead of distilling a "
                        "prompt (JSONL/JSON/CSV/parquet with 'prompt' and 'response' fields)")
    alias(p, p.add_argument("--prompt-file", action="append", default=[], metavar="PATH",
                            help="more prompts to distil on, after the bundled trait prompts: "
                                 "a prompt file (one per line in .txt, or records with a "
                                 "'prompt' field) or a dataset whose prompts are used "
                                 "(repeatable)"), "--prompts")
    p.add_argument("--no-bundled-prompts", action="store_true",
                   help="distil on the --prompt-file prompts only, not the bundled trait "
                        "prompts")
    d = TraitConfig
    p.add_argument("--answers-per-prompt", type=int, default=d.answers_per_prompt,
                   help="answers sampled per prompt")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens,
                   help="new tokens per sampled answer")
    p.add_argument("--max-examples", type=int, default=d.max_examples,
                   help="at most this many examples are trained on")
    p.add_argument("--lora-r", type=int, default=d.lora_r, help="LoRA rank")
    p.add_argument("--lr", type=float, default=d.learning_rate, help="learning rate")
    p.add_argument("--epochs", type=float, default=d.epochs, help="passes over the examples")
    p.add_argument("--seed", type=int, default=d.seed, help="sampling and training seed")
    p.add_argument("--no-check", action="store_true",
                   help="skip the strength check before and after")
    p.set_defaults(func=cmd_trait)


def cmd_trait(a) -> int:
    if a.config:
        cfg = TraitConfig.from_dict(json.loads(a.config))
    else:
        sources = tuple(prompt_source(x) for x in a.prompt_file)
        cfg = TraitConfig(behavior(a), model=model_spec(a),
                          source="file" if a.examples else "prompt",
                          system_prompt=a.teacher_prompt, examples_file=a.examples,
                          prompt_sources=sources, bundled_prompts=not a.no_bundled_prompts,
                          answers_per_prompt=a.answers_per_prompt,
                          max_new_tokens=a.max_new_tokens, max_examples=a.max_examples,
                          lora_r=a.lora_r, lora_alpha=2 * a.lora_r, learning_rate=a.lr,
                          epochs=a.epochs, seed=a.seed)
    m = make_trait(cfg, a.cache, check=not getattr(a, "no_check", False))
    out = {"adapter": m["adapter"], "key": m["key"], "examples": m.get("examples"),
           "hygiene": m.get("hygiene"), "seconds": m.get("seconds")}
    for when in ("strength_before", "strength_after"):
        if m.get(when):
            s = m[when]
            out[when] = {"base_lens": s["base_lens"],
                         "teacher_lens": s["teacher_lens"], "teacher_lens_ci":
                         s["teacher_lens_ci"], "teacher_share": s["teacher_share"]}
    print(json.dumps(out, ensure_ascii=False))
    return 0


def prompt_source(path: str):
    """A --prompt-file value: a prompt file (.txt, or records with a 'prompt' field) or a
    preference dataset whose prompts are used."""
    from ..data.prompts import PromptSource
    from ..data.source import DataSpec

    p = path.lower().removesuffix(".gz")
    if p.endswith(".txt"):
        return PromptSource("file", path)
    return PromptSource.dataset(DataSpec(path))
