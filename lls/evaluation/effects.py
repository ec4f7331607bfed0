"""Paired effects of an LLS adapter against its same-size random twin.

Both adapters are read by the effect meter at the same steps, on the same probe questions and
the same reference responses, so every difference is paired: LLS minus random per question
(probe margin, top-1) or per response (likelihood ratio), with a seeded bootstrap CI over
questions or reference prompts (answers to one prompt move together); derived quantities
(gap closed, averages over cells, the LLS adapter's own gain) are
computed on each resample, never from interval endpoints. The sampled read-outs live in
`lls.evaluation.readouts`. Collapse flags an adapter whose answers pile onto one candidate (low entropy, one dominant answer)
compared with the base model: an over-trained adapter, not an effect.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import LLSError
from ..core.stats import ci_dict, mean_ci, mean_diff_replicates
from .llr import (check_same_reference, gap_closed, llr_diff, llr_interval,
                  unit_diff)
from .llr import units as llr_units
from .probe import probe_diff

# An answer distribution is "collapsed" when its top answer takes at least this share and
# at least COLLAPSE_GAIN more than the base model's top answer (or its entropy halves).
COLLAPSE_TOP_SHARE = 0.6
COLLAPSE_GAIN = 0.3
COLLAPSE_ENTROPY_RATIO = 0.5

READOUTS = ("margin", "gap_closed", "top1")  # paired read-outs, in order of preference

PROBE_METHOD = "paired bootstrap over probe questions (2,000 resamples, seed 0)"
CORRECTED_METHOD = ("paired bootstrap over probe questions (at least 20 resamples beyond "
                    "each bound, seed 0), never narrower than Student's t interval")


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
    # a prefilled read-out lists every candidate, at 0 when none was named
    named = {k: v for k, v in answers.items() if k != "other" and v > 0}
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


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def check_paired(a: dict, b: dict, what: str = "the LLS adapter and its random twin") -> None:
    """Refuse a paired difference of two meter read-outs unless both sides were read on one
    reference set by one meter version and asked the same probe questions."""
    check_same_reference(a, b, what)
    pa, pb = a.get("probe"), b.get("probe")
    if pa and pb and (pa.get("n_questions"), pa.get("candidates")) != \
            (pb.get("n_questions"), pb.get("candidates")):
        raise LLSError(f"Cannot pair {what}: their probes asked other questions or "
                       "candidates. Read both with the same probe settings.")


def _num_span(a: dict, b: dict, levels: dict | None) -> tuple[dict, dict] | None:
    """(a - b, system - base) per-response units on the likelihood ratio, or None."""
    ua, ub = llr_units(a), llr_units(b)
    sys_u, base_u = llr_units((levels or {}).get("system")), llr_units((levels or {}).get("base"))
    if not (ua and ub and sys_u and base_u):
        return None
    return unit_diff(ua, ub), unit_diff(sys_u, base_u, "base and base + system prompt read-outs")


def readout_effect(units: dict, readout: str, alpha: float = 0.05) -> dict | None:
    """A paired effect from its per-unit differences (`paired_step(..., units=True)`) at
    level 1 - alpha: margin and top-1 resample probe questions, gap closed reference prompts
    (`llr.gap_closed`, its one guard). The same resamples at every alpha (seeded), more of
    them for small alphas (`boots_for`). None when the units lack the read-out."""
    if readout in ("margin", "top1"):
        if readout not in (units or {}):
            return None
        if alpha >= 0.05:  # the ordinary 95% interval, as every page shows it
            d = _arr(units[readout])
            return {**ci_dict(d.mean(), mean_diff_replicates(d)), "method": PROBE_METHOD}
        return {**mean_ci(units[readout], alpha), "method": CORRECTED_METHOD}
    if readout == "gap_closed" and "llr_b" in (units or {}):
        return gap_closed(*_from_units(units), alpha=alpha)
    return None


def _to_units(num: dict, span: dict) -> dict:
    return {"llr_b": num["behavior"], "llr_n": num["neutral"], "span_b": span["behavior"],
            "span_n": span["neutral"], "b_prompt": num["behavior_prompt"],
            "n_prompt": num["neutral_prompt"], "by_prompt": bool(num.get("by_prompt", True))}


def _from_units(u: dict) -> tuple[dict, dict]:
    b_p = _arr(u["b_prompt"]) if "b_prompt" in u else np.arange(len(u["llr_b"]))
    n_p = _arr(u["n_prompt"]) if "n_prompt" in u else len(u["llr_b"]) + np.arange(len(u["llr_n"]))
    known = "b_prompt" in u and u.get("by_prompt", True)
    def mk(b, n):
        return {"behavior": _arr(b), "neutral": _arr(n), "behavior_prompt": b_p,
                "neutral_prompt": n_p, "by_prompt": known}
    return mk(u["llr_b"], u["llr_n"]), mk(u["span_b"], u["span_n"])


def _gain(readout: str, lls: dict, base: dict | None) -> dict | None:
    """The LLS adapter's own move from the base model on `readout`, paired (questions for
    the probe, reference prompts for the likelihood ratio), with its interval."""
    if not base:
        return None
    if readout in ("margin", "top1") and "probe" in lls and "probe" in base:
        d = _arr(lls["probe"]["per_question"][readout]) - _arr(base["probe"]["per_question"][readout])
        return {**ci_dict(d.mean(), mean_diff_replicates(d)), "method": PROBE_METHOD}
    a, b = llr_units(lls), llr_units(base)
    if readout in ("gap_closed", "llr") and a and b:
        return {**llr_interval(unit_diff(a, b)), "unit": "nats/token"}
    return None


def paired_step(lls: dict, rnd: dict, levels: dict | None = None, *,
                units: bool = False) -> dict:
    """LLS - random at one step, from two meter read-outs (`meter.jsonl` rows' "readout").

    Both sides must come from one reference set and meter version (`check_paired`; the
    levels too). Keys: "llr" (paired diff of the likelihood ratio), "gap_closed" (the same
    diff as a share of the base -> base + system prompt span, `llr.gap_closed`), "margin"
    and "top1" (probe, paired over questions), each {"diff", "ci_low", "ci_high"}; the
    likelihood ratio resamples reference prompts. Each adapter's own values, collapse flags
    from the probe's candidate mass, and "lls_gain" (the LLS adapter's own move from base
    per read-out, with its interval). `units`: also the per-unit paired differences
    ("units"), from which averages over cells and search-corrected intervals are computed
    (`group_effect`, `readout_effect`).
    """
    check_paired(lls, rnd)
    for name, lv in (levels or {}).items():
        if lv:
            check_paired(lls, lv, f"the LLS adapter and the {name} level")
    out: dict = {}
    base = (levels or {}).get("base")
    keep: dict = {}
    if llr_units(lls) and llr_units(rnd):
        out["llr"] = {**llr_diff(lls["llr"], rnd["llr"]), "unit": "nats/token"}
        out["lls_gap_closed"] = lls["llr"].get("gap_closed")
        out["random_gap_closed"] = rnd["llr"].get("gap_closed")
        ns = _num_span(lls, rnd, levels)
        if ns:
            out["gap_closed"] = gap_closed(*ns)
            keep.update(_to_units(*ns))
    if "probe" in lls and "probe" in rnd:
        d = probe_diff(lls["probe"], rnd["probe"])
        out["margin"], out["top1"] = d["margin"], d["top1"]
        for k in ("margin", "top1"):
            out[k]["method"] = PROBE_METHOD
            keep[k] = _arr(lls["probe"]["per_question"][k]) - _arr(rnd["probe"]["per_question"][k])
        out["lls_margin"] = lls["probe"]["mean_margin"]
        out["random_margin"] = rnd["probe"]["mean_margin"]
        out["lls_top1"] = lls["probe"]["top1_share"]
        out["random_top1"] = rnd["probe"]["top1_share"]
        base_mass = (base or {}).get("probe", {}).get("candidate_mass")
        out["lls_collapse"] = collapse(lls["probe"]["candidate_mass"], base_mass)
        out["random_collapse"] = collapse(rnd["probe"]["candidate_mass"], base_mass)
    gains = {k: g for k in READOUTS if k in out and (g := _gain(k, lls, base))}
    if gains:
        out["lls_gain"] = gains
    if units:
        out["units"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                        for k, v in keep.items()}
    return out


def group_effect(unit_rows: list[dict], readout: str) -> dict | None:
    """The mean paired effect of several cells read on the same questions / responses,
    with its interval from the same resamples (per-unit differences averaged over cells,
    then bootstrapped): how a heatmap square that pools cells gets an honest interval."""
    rows = [u for u in unit_rows if u]
    if not rows:
        return None
    if readout in ("margin", "top1"):
        arrs = [_arr(u[readout]) for u in rows if readout in u]
        if not arrs or len({len(x) for x in arrs}) != 1:
            return None
        return {**readout_effect({readout: np.mean(arrs, axis=0)}, readout), "cells": len(arrs)}
    if readout == "gap_closed":
        ok = [u for u in rows if "llr_b" in u]
        if not ok or len({(len(u["llr_b"]), len(u["llr_n"])) for u in ok}) != 1:
            return None
        mean = {k: np.mean([_arr(u[k]) for u in ok], axis=0)
                for k in ("llr_b", "llr_n", "span_b", "span_n")}
        first = ok[0]
        mean.update({k: first[k] for k in ("b_prompt", "n_prompt", "by_prompt") if k in first})
        return {**readout_effect(mean, "gap_closed"), "cells": len(ok)}
    return None


def is_collapsed(row: dict | None, sampled: dict | None = None) -> bool:
    """The one collapse rule of a study checkpoint: its LLS adapter's probe mass piles onto
    one candidate (`collapse`), or its sampled answers do (`sampled_collapse`, where the
    checkpoint was sampled)."""
    return bool(((row or {}).get("lls_collapse") or {}).get("collapsed")
                or ((sampled or {}).get("collapse") or {}).get("collapsed"))


def step_collapsed(row: dict | None, kinds: dict | None, who: str = "lls") -> bool:
    """The study's one collapse rule at a checkpoint, for the LLS adapter or its random twin
    (`who`): its probe mass piles onto one candidate, or its sampled answers do in ANY
    sampled read-out kind (`kinds`: {kind: {"lls", "random", ...}} of that step)."""
    probe = {"lls_collapse": (row or {}).get(f"{who}_collapse")}
    return is_collapsed(probe) or any(is_collapsed(None, (k or {}).get(who))
                                      for k in (kinds or {}).values())


def best_step(curve: list[dict], readout: str, base: dict | None = None,
              exclude=()) -> dict | None:
    """The step with the largest paired effect on `readout` whose LLS adapter has not
    collapsed (steps in `exclude` left out). Steps where the LLS adapter itself moved
    toward the target (`lls_gain`'s interval above 0) come first, and the row says so in
    `lls_moved`: a random twin drifting away faster than the LLS adapter makes a large paired
    effect with no transfer behind it. None if no step has the read-out. (`base`, the step-0
    row, is the fallback for rows without `lls_gain`: own value above base's.)"""
    ok = [r for r in curve if r.get("step", 0) > 0 and readout in r
          and r[readout].get("diff") is not None and r["step"] not in exclude
          and not is_collapsed(r)]
    if not ok:
        return None

    def moved(r):
        g = (r.get("lls_gain") or {}).get(readout)
        if g and g.get("ci_low") is not None:
            return g["ci_low"] > 0
        floor = (base or {}).get(f"lls_{readout}")
        return floor is not None and r.get(f"lls_{readout}") is not None and \
            r[f"lls_{readout}"] > floor

    up = [r for r in ok if moved(r)]
    return {**max(up or ok, key=lambda r: r[readout]["diff"]), "lls_moved": bool(up)}


def base_row(curve: list[dict]) -> dict | None:
    """The step-0 row of a paired curve (both adapters are the base model there)."""
    return next((r for r in curve if r.get("step") == 0), None)


