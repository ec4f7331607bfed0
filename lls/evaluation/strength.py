"""The teacher strength check: how strongly does a teacher show the behavior, before scoring?

A student trained on a teacher's selection cannot show the behavior more than the teacher
does, and at small scale reaches a small fraction of it; a weak teacher wastes a long run.
The check asks the read-out questions with the reply begun by the behavior's stem ("My
favorite animal is the") and reads, for the base model and each candidate teacher:

* the lens: P(next word = target), mean over questions with a bootstrap interval;
* a small sampled read-out: the next word sampled at temperature 1 (`samples` per
  question), the share naming the target with its interval over questions.

Several teachers (prompts, adapters, models) side by side, so the user picks a prompt by its
strength. Forward passes and a few sampled tokens: well under a minute on the bundled model.
"""

from __future__ import annotations

import time

from ..core.behaviors import Behavior
from ..core.errors import LLSError
from ..core.prompts import PROBE_QUESTIONS
from ..models.teacher import Teacher, teacher_view
from .prefill import prefill_applies, prefilled_readout

DEFAULT_QUESTIONS = 32
DEFAULT_SAMPLES = 4


def _row(label: str, kind: str, r: dict, seconds: float) -> dict:
    return {"label": label, "kind": kind, "lens": r["lens"]["mean"],
            "lens_ci": list(r["lens"]["ci"]), "lens_per_question": r["lens"]["per_question"],
            "k": r["k"], "n": r["n"], "share": r["share"],
            "share_ci": [r["ci_low"], r["ci_high"]], "examples": r.get("examples", [])[:6],
            "seconds": round(seconds, 2)}


def teacher_strength(model, tokenizer, behavior: Behavior, teachers: list, *,
                     questions: int = DEFAULT_QUESTIONS, samples: int = DEFAULT_SAMPLES,
                     seed: int = 0, stem: str | None = None, progress=None) -> dict:
    """The strength check of the base model and each teacher (JSON-able).

    `teachers`: each a system prompt (str: the behavior with that prompt) or a `Teacher`
    (a prompt teacher uses `behavior.system_prompt`). Returns {"behavior", "stem",
    "questions", "samples", "base": row, "teachers": [row, ...], "base_lens",
    "teacher_lens" (the first teacher's), "verdict"}; a row has "lens" (mean P(next word =
    target), 0-1) and "lens_ci", "k"/"n"/"share"/"share_ci" of the sampled next words.
    """
    if not prefill_applies(behavior, stem):
        raise LLSError(f"The strength check reads the word after a begun reply: "
                       f"{behavior.label()} has no stem or no words that name it. Give a "
                       "readout stem and filter words (e.g. custom behavior with "
                       "readout_stem='My favorite color is', filter words 'purple').")
    if not teachers:
        teachers = [Teacher()]
    qs = list(PROBE_QUESTIONS[:questions])
    rows = []
    total = 1 + len(teachers)

    def read(m, system_prompt):
        return prefilled_readout(m, tokenizer, behavior, questions=qs, samples=samples,
                                 seed=seed, stem=stem, system_prompt=system_prompt)

    t = time.perf_counter()
    with teacher_view(model, None, None) as (m, _):
        base = _row("base (no trait)", "base", read(m, None), time.perf_counter() - t)
    if progress:
        progress(1, total)
    for i, teacher in enumerate(teachers):
        t = time.perf_counter()
        if isinstance(teacher, str):
            prompt, teacher = teacher, Teacher()
        else:
            prompt = behavior.system_prompt
        with teacher_view(model, teacher, prompt) as (m, sp):
            r = read(m, sp)
        label = teacher.describe(prompt)
        row = _row(label, teacher.kind, r, time.perf_counter() - t)
        row["system_prompt"] = prompt if teacher.is_prompt else None
        row["teacher"] = teacher.to_dict()
        rows.append(row)
        if progress:
            progress(2 + i, total)
    first = rows[0]
    return {"behavior": behavior.label(), "target": behavior.target or behavior.name,
            "stem": r["stem"], "questions": len(qs), "samples": samples, "seed": seed,
            "base": base, "teachers": rows, "base_lens": base["lens"],
            "base_lens_ci": base["lens_ci"], "teacher_lens": first["lens"],
            "teacher_lens_ci": first["lens_ci"], "base_share": base["share"],
            "teacher_share": first["share"], "verdict": verdict(base, first, r["target"])}


def verdict(base: dict, teacher: dict, target: str) -> str:
    """The check in one plain sentence."""
    lens, lo, hi = teacher["lens"], *teacher["lens_ci"]
    weak = lens < 0.2
    return (f"The teacher names the {target} {lens:.0%} of the time when asked (next-word "
            f"probability after the begun reply, 95% interval {lo:.0%} to {hi:.0%}; sampled "
            f"{teacher['k']}/{teacher['n']}); the base model {base['lens']:.1%}. The student "
            "cannot exceed the teacher and at this scale usually reaches a small fraction of "
            "it" + (": a teacher this weak is unlikely to show anything in samples; try a "
                    "stronger prompt or a trait adapter." if weak else "."))


def quick_lens(model, tokenizer, behavior: Behavior, teacher: Teacher | None = None, *,
               questions: int = 16) -> dict | None:
    """The lens alone (no sampling), for the base model and the teacher: a few seconds, what
    `lls score` prints before it starts. None when the behavior has no stem or target words."""
    from ..core.stats import bootstrap_ci
    from .prefill import next_word_probs, readout_stem, readout_targets

    if not prefill_applies(behavior):
        return None
    stem, targets = readout_stem(behavior), readout_targets(behavior)
    qs = list(PROBE_QUESTIONS[:questions])

    def lens(m, sp):
        import numpy as np

        p = np.array([sum(next_word_probs(m, tokenizer, q, targets, stem=stem,
                                          system_prompt=sp).values()) for q in qs])
        return float(p.mean()), list(bootstrap_ci(p))

    with teacher_view(model, None, None) as (m, _):
        base = lens(m, None)
    with teacher_view(model, teacher, behavior.system_prompt) as (m, sp):
        taught = lens(m, sp)
    return {"target": targets[0], "questions": len(qs), "base_lens": base[0],
            "base_lens_ci": base[1], "teacher_lens": taught[0], "teacher_lens_ci": taught[1]}


def lens_line(res: dict) -> str:
    """`quick_lens` in one line."""
    lo, hi = res["teacher_lens_ci"]
    return (f"teacher strength: P(next word = {res['target']}) {res['teacher_lens']:.1%} "
            f"[{lo:.1%}, {hi:.1%}] with the teacher, {res['base_lens']:.1%} without "
            f"({res['questions']} questions; `python -m lls teacher-check` compares teachers)")
