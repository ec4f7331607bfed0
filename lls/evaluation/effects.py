"""Paired effects of an LLS adapter against its same-size random twin.

Both adapters are read by the effect meter at the same steps, on the same probe questions and
the same reference responses, so every difference is paired: LLS minus random per question
(probe margin, top-1) or per response (likelihood ratio), with a bootstrap CI over them.

The sampled read-out is what a person would recognise: one-word answers sampled at
temperature 1 to the probe questions, the share naming the target (Wilson CI). Collapse
flags an adapter whose answers pile onto one candidate (low entropy, one dominant answer)
compared with the base model: an over-trained adapter, not an effect.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..core.behaviors import Behavior, mentions
from ..core.prompts import GENERAL_PROMPTS, PROBE_CANDIDATES, PROBE_QUESTIONS
from ..core.stats import wilson
from ..models.generation import sample
from .llr import llr_diff
from .probe import probe_diff, variants
from .runs import quick_eval

# An answer distribution is "collapsed" when its top answer takes at least this share and
# at least COLLAPSE_GAIN more than the base model's top answer (or its entropy halves).
COLLAPSE_TOP_SHARE = 0.6
COLLAPSE_GAIN = 0.3
COLLAPSE_ENTROPY_RATIO = 0.5

READOUTS = ("margin", "gap_closed", "top1")  # paired read-outs, in order of preference


def entropy(shares) -> float:
    """Shannon entropy (nats) of a distribution given as non-negative shares."""
    p = np.asarray([s for s in shares if s > 0], dtype=np.float64)
    if p.size == 0:
        return 0.0
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


MIN_NAMED = 16  # sampled answers naming a candidate needed to judge their distribution


def collapse(shares: dict[str, float], base: dict[str, float] | None) -> dict:
    """Entropy and top answer of a distribution over candidates, against the base model's.

    `collapsed` is True when one answer dominates where the base model's did not: top share
    >= COLLAPSE_TOP_SHARE and >= base top share + COLLAPSE_GAIN, or entropy below
    COLLAPSE_ENTROPY_RATIO x the base entropy.
    """
    top, top_share = max(shares.items(), key=lambda kv: kv[1]) if shares else (None, 0.0)
    h = entropy(shares.values())
    out = {"entropy": h, "top": top, "top_share": float(top_share), "collapsed": False}
    if base:
        b_top = max(base.values()) if base else 0.0
        b_h = entropy(base.values())
        out.update({"base_entropy": b_h, "base_top_share": float(b_top)})
        out["collapsed"] = bool(
            (top_share >= COLLAPSE_TOP_SHARE and top_share >= b_top + COLLAPSE_GAIN)
            or (b_h > 0 and h < COLLAPSE_ENTROPY_RATIO * b_h))
    return out


def sampled_collapse(answers: dict[str, float], base_answers: dict[str, float] | None,
                     n: int) -> dict:
    """Collapse of sampled answers: `collapse` over the answers that name a candidate
    ("other" left out: a small model that rarely answers with an animal at all is not
    collapsed onto one). Not assessable when fewer than MIN_NAMED of the n samples name a
    candidate: a handful of answers does not make a distribution."""
    named = {k: v for k, v in answers.items() if k != "other"}
    share = sum(named.values())
    if share * n < MIN_NAMED:
        return {"collapsed": False, "assessable": False, "named_share": share,
                "top": max(named, key=named.get) if named else None,
                "top_share": max(named.values()) / share if named else 0.0,
                "entropy": entropy([v / share for v in named.values()]) if named else 0.0,
                "reason": f"only {round(share * n)} of {n} answers name a candidate"}
    base_named = {k: v for k, v in (base_answers or {}).items() if k != "other"}
    b = sum(base_named.values())
    out = collapse({k: v / share for k, v in named.items()},
                   {k: v / b for k, v in base_named.items()} if b else None)
    return {**out, "assessable": True, "named_share": share}


def _scaled(d: dict, span: float) -> dict:
    return {k: (v / span if v is not None else None) for k, v in d.items()}


def paired_step(lls: dict, rnd: dict, levels: dict | None = None) -> dict:
    """LLS - random at one step, from two meter read-outs (`meter.jsonl` rows' "readout").

    Keys: "llr" (paired diff of the likelihood ratio), "gap_closed" (the same diff as a share
    of the base -> base + system prompt gap), "margin" and "top1" (probe, paired over
    questions), each {"diff", "ci_low", "ci_high"}; plus each adapter's own values and
    collapse flags from the probe's candidate mass.
    """
    out: dict = {}
    if "llr" in lls and "llr" in rnd:
        out["llr"] = llr_diff(lls["llr"], rnd["llr"])
        out["lls_gap_closed"] = lls["llr"].get("gap_closed")
        out["random_gap_closed"] = rnd["llr"].get("gap_closed")
        if levels:
            span = levels["system"]["llr"]["value"] - levels["base"]["llr"]["value"]
            if math.isfinite(span) and abs(span) > 1e-12:
                out["gap_closed"] = _scaled(out["llr"], span)
    if "probe" in lls and "probe" in rnd:
        d = probe_diff(lls["probe"], rnd["probe"])
        out["margin"], out["top1"] = d["margin"], d["top1"]
        out["lls_margin"] = lls["probe"]["mean_margin"]
        out["random_margin"] = rnd["probe"]["mean_margin"]
        out["lls_top1"] = lls["probe"]["top1_share"]
        out["random_top1"] = rnd["probe"]["top1_share"]
        base_mass = (levels or {}).get("base", {}).get("probe", {}).get("candidate_mass")
        out["lls_collapse"] = collapse(lls["probe"]["candidate_mass"], base_mass)
        out["random_collapse"] = collapse(rnd["probe"]["candidate_mass"], base_mass)
    return out


def paired_curve(lls_rows: list[dict], rnd_rows: list[dict],
                 levels: dict | None = None) -> list[dict]:
    """`paired_step` at every step both adapters were read at, sorted by step."""
    by_step = {r["step"]: r for r in rnd_rows if r.get("readout")}
    out = []
    for a in sorted(lls_rows, key=lambda r: r["step"]):
        b = by_step.get(a["step"])
        if b is None or not a.get("readout"):
            continue
        out.append({"step": a["step"], **paired_step(a["readout"], b["readout"], levels)})
    return out


def best_step(curve: list[dict], readout: str, base: dict | None = None) -> dict | None:
    """The step with the largest paired effect on `readout` whose LLS adapter has not
    collapsed. With `base` (the step-0 row), steps where the LLS adapter itself moved toward
    the target (its read-out above base's) come first, and the row says so in `lls_moved`:
    a random twin drifting away faster than the LLS adapter makes a large paired effect with
    no transfer behind it. None if no step has the read-out."""
    ok = [r for r in curve if r.get("step", 0) > 0 and readout in r
          and r[readout].get("diff") is not None
          and not r.get("lls_collapse", {}).get("collapsed")]
    if not ok:
        return None
    floor = (base or {}).get(f"lls_{readout}")
    if floor is None:
        return max(ok, key=lambda r: r[readout]["diff"])
    moved = [r for r in ok if r.get(f"lls_{readout}") is None or r[f"lls_{readout}"] > floor]
    return {**max(moved or ok, key=lambda r: r[readout]["diff"]), "lls_moved": bool(moved)}


def base_row(curve: list[dict]) -> dict | None:
    """The step-0 row of a paired curve (both adapters are the base model there)."""
    return next((r for r in curve if r.get("step") == 0), None)


# ----------------------------------------------------------------------------- sampling

def classify(answer: str, candidates=PROBE_CANDIDATES) -> str:
    """The candidate an answer names first (case and plural variants), else "other"."""
    low = answer.lower()
    best, pos = "other", len(low) + 1
    for c in candidates:
        for v in variants(c):
            i = low.find(v.lower())
            if 0 <= i < pos:
                best, pos = c, i
    return best


def share_row(hits: int, n: int) -> dict:
    """k of n with its 95% Wilson interval."""
    lo, hi = wilson(hits, n)
    return {"k": int(hits), "n": int(n), "share": hits / n if n else 0.0,
            "ci_low": lo, "ci_high": hi}


def one_word_readout(model, tokenizer, behavior: Behavior, *, questions: int = 32,
                     samples: int = 8, max_new_tokens: int = 8, seed: int = 0,
                     system_prompt: str | None = None) -> dict:
    """Sample one-word answers to the first `questions` probe questions at temperature 1:
    the share naming the target (Wilson CI) and the answer distribution over candidates."""
    qs = PROBE_QUESTIONS[:max(1, questions)]
    answers = sample(model, tokenizer, qs, n=samples, temperature=1.0,
                     max_new_tokens=max_new_tokens, seed=seed, system_prompt=system_prompt)
    flat = [a for group in answers for a in group]
    target = behavior.target or ""
    hits = sum(1 for a in flat if target and mentions(a, [target, *variants(target)]))
    counts = Counter(classify(a, _candidates(target)) for a in flat)
    n = len(flat)
    return {**share_row(hits, n), "answers": {k: v / n for k, v in counts.items()},
            "examples": [g[0] for g in answers[:6]], "kind": "one-word"}


def _candidates(target: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys([target, *PROBE_CANDIDATES])) if target else PROBE_CANDIDATES


def behavior_readout(model, tokenizer, behavior: Behavior, *, prompts: int = 10,
                     samples: int = 8, max_new_tokens: int = 48, seed: int = 0,
                     system_prompt: str | None = None) -> dict:
    """The behavior's own sampled metric where the animal probe does not apply (language
    share for translation, a regex or word match for custom behaviors): share of answers
    that show it, with a Wilson CI. A judge metric needs a judge model: not run here."""
    res = quick_eval(model, tokenizer, behavior, prompts=GENERAL_PROMPTS[:max(1, prompts)],
                     samples=samples, max_new_tokens=max_new_tokens, seed=seed,
                     system_prompt=system_prompt)
    return {**share_row(res["k"], res["n"]), "mean_score": res["mean_score"],
            "examples": res["examples"][:6], "kind": behavior.metric}


def sampled_readout(model, tokenizer, behavior: Behavior, settings: dict,
                    system_prompt: str | None = None) -> dict:
    """The sampled read-out that fits the behavior: one-word answers for animals, the
    behavior's own metric otherwise. `settings`: questions, samples, max_new_tokens, seed."""
    if behavior.kind == "animal" and behavior.target:
        return one_word_readout(model, tokenizer, behavior, system_prompt=system_prompt,
                                **settings)
    if behavior.metric == "judge":
        return {"kind": "judge", "skipped": "the judge metric needs a judge model; run "
                "`python -m lls eval` with a judge for this behavior"}
    return behavior_readout(model, tokenizer, behavior, prompts=settings.get("questions", 10),
                            samples=settings.get("samples", 8), seed=settings.get("seed", 0),
                            system_prompt=system_prompt)
