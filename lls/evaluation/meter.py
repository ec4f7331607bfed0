"""The effect meter: log-probability read-outs of the target behavior (forward passes only).

Sampled mention rates need hundreds of generations and read zero at small scale; the
log-probabilities they come from move first. Two read-outs, both batched forward passes,
and in `meter_models` a third, sampled one:

1. the *preference probe* (`lls.evaluation.probe`; animal behaviors, or any short target with questions
   of your own): the target's margin, rank and mass as the one-word answer;
2. the *behavior likelihood ratio* (`lls.evaluation.llr`; every behavior): per-token log P of responses
   sampled with the system prompt minus that of responses sampled without it, with the base
   model as the floor and base + system prompt as the ceiling (`gap_closed`).

What the meter cannot tell: it measures how the model's probabilities move toward the
behavior, not whether samples show it.

This module holds the entry points: `readout` (one model), `reference_levels` (floor and
ceiling), `readout_for_peft_model` (a model in training), `meter_models` (base, base + system
prompt and adapters), `summary_rows`; CLI `python -m lls meter`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import jobs
from ..core.behaviors import Behavior, from_name
from ..core.stats import gap_ratio, mean_diff_replicates
from ..models.generation import AdapterHost, adapter_label, base_weights
from .llr import (METER_VERSION, LLRConfig, Reference, build_reference, check_same_reference,
                  llr_readout, model_gap_closed)
from ..models.load import ModelSpec, load_model
from ..models.teacher import Teacher, teacher_view
from .prefill import (PrefillConfig, lens_diff, prefill_applies, prefill_diff,
                      prefilled_readout)
from .probe import ProbeConfig, probe_applies, probe_readout


# ======================================================================================
# One read-out of one model
# ======================================================================================

def _resolve_probe(behavior: Behavior, probe) -> ProbeConfig | None:
    if probe is False:
        return None
    if probe is None:
        return ProbeConfig().with_target(behavior.target) if probe_applies(behavior) else None
    target = behavior.target if behavior.kind == "animal" else probe.target
    return probe.with_target(target)


def readout(model, tokenizer, behavior: Behavior, *, system_prompt: str | None = None,
            probe: ProbeConfig | None | bool = None, llr: LLRConfig | None = None,
            reference: Reference | None = None, base_ref: dict | None = None,
            ceiling_ref: dict | None = None, cache_dir: Path | None = None) -> dict:
    """Both read-outs of `model` as a JSON-able dict.

    `system_prompt`: put it in every prompt (the ceiling: base + system prompt).
    `probe`: a ProbeConfig (its first candidate is the target, unless the behavior is an
    animal), None for the default on animal behaviors, False to skip. `reference`: the
    sampled reference set (built from `model`'s base weights and cached when not given).
    `base_ref` / `ceiling_ref`: read-outs of base and base + system prompt; add paired
    differences to the base and the share of the gap closed.
    """
    t0 = time.perf_counter()
    pcfg = _resolve_probe(behavior, probe)
    if reference is None:
        reference = build_reference(model, tokenizer, behavior, llr, cache_dir=cache_dir)
    for ref in (base_ref, ceiling_ref):
        if ref is not None:
            check_same_reference({"reference": reference.key, "meter_version": METER_VERSION},
                                 ref, "this read-out and its base / ceiling")
    out: dict = {"behavior": behavior.label(), "system_prompt": bool(system_prompt),
                 "reference": reference.key, "meter_version": METER_VERSION}
    if pcfg is not None:
        out["probe"] = probe_readout(model, tokenizer, pcfg, system_prompt=system_prompt,
                                     base=(base_ref or {}).get("probe"))
    out["llr"] = llr_readout(model, tokenizer, reference, system_prompt=system_prompt,
                             base=(base_ref or {}).get("llr"))
    if base_ref is not None and ceiling_ref is not None:
        put_gap(out["llr"], "gap_closed", model_gap_closed(out, base_ref, ceiling_ref))
        if "probe" in out and "probe" in base_ref and "probe" in ceiling_ref:
            put_gap(out["probe"], "margin_gap_closed", margin_gap_closed(
                out["probe"], base_ref["probe"], ceiling_ref["probe"]))
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def reference_levels(model, tokenizer, behavior: Behavior, reference: Reference, *,
                     probe: ProbeConfig | None | bool = None,
                     teacher: Teacher | None = None) -> dict:
    """{"base": floor read-out, "system": ceiling read-out} on the base weights (a peft
    model's adapters are disabled): the reference lines of the training curves. The ceiling
    is the teacher: base + system prompt, or `teacher` (`lls.models.teacher`)."""
    with base_weights(model) as base:
        floor = readout(base, tokenizer, behavior, probe=probe, reference=reference)
    with teacher_view(model, teacher, behavior.system_prompt) as (tm, sp):
        ceiling = readout(tm, tokenizer, behavior, system_prompt=sp, probe=probe,
                          reference=reference, base_ref=floor)
    # by definition: the floor closes none of the gap, the ceiling all of it (unless the
    # system prompt barely opens one: then neither is a share of anything)
    span = model_gap_closed(ceiling, floor, ceiling).get("undefined")
    for level, value in ((floor, 0.0), (ceiling, 1.0)):
        level["llr"]["gap_closed"] = None if span else value
        level["llr"]["gap_closed_undefined"] = span
    return {"base": floor, "system": ceiling}


def put_gap(into: dict, key: str, gap: dict) -> None:
    """Store a gap closed (`lls.core.stats.gap_ratio`) in a read-out: the value (None when
    undefined), its interval and why it is undefined."""
    into[key] = gap["diff"]
    into[f"{key}_ci"] = [gap["ci_low"], gap["ci_high"]]
    into[f"{key}_undefined"] = gap.get("undefined")


def margin_gap_closed(probe: dict, base: dict, system: dict) -> dict:
    """The probe margin's gap closed: the model's move from base as a share of the base ->
    base + system prompt move, paired over questions (the one guard, `gap_ratio`)."""
    m, b, s = (np.asarray(p["per_question"]["margin"], dtype=np.float64)
               for p in (probe, base, system))
    num, span = m - b, s - b
    return gap_ratio(float(num.mean()), float(span.mean()), mean_diff_replicates(num),
                     mean_diff_replicates(span))


def readout_for_peft_model(peft_model, tokenizer, behavior: Behavior, reference: Reference, *,
                           levels: dict | None = None,
                           probe: ProbeConfig | None | bool = None) -> dict:
    """A read-out of the in-training model as it is (adapter active), e.g. at a checkpoint.

    No reload: the model runs in eval mode under `torch.inference_mode()` and gets its
    training mode back. `levels` (from `reference_levels`, computed once at step 0) adds the
    differences to the base model and the share of the gap closed.
    """
    return readout(peft_model, tokenizer, behavior, probe=probe, reference=reference,
                   base_ref=(levels or {}).get("base"), ceiling_ref=(levels or {}).get("system"))


# ======================================================================================
# Several models (base, base + system prompt, adapters)
# ======================================================================================

def _resolve_prefill(behavior: Behavior, prefill) -> PrefillConfig | None:
    """None: the default read-out when the behavior has a stem; a config: that one (an error
    if the behavior has no stem or target words); False: none."""
    if prefill is False:
        return None
    if prefill is None or prefill is True:
        return PrefillConfig() if prefill_applies(behavior) else None
    return prefill


def _prefill(model, tokenizer, b: Behavior, cfg: PrefillConfig, system_prompt=None,
             base: dict | None = None, ceiling: dict | None = None) -> dict:
    """One model's prefilled read-out with paired differences (over questions) to base and
    to the teacher (`ceiling`)."""
    r = prefilled_readout(model, tokenizer, b, questions=cfg.question_list(),
                          samples=cfg.samples, seed=cfg.seed, stem=cfg.stem,
                          system_prompt=system_prompt)
    for name, ref in (("base", base), ("system", ceiling)):
        if ref is not None:
            r[f"diff_vs_{name}"] = prefill_diff(r, ref)
            r[f"lens_diff_vs_{name}"] = lens_diff(r, ref)
    return r


def meter_models(base_spec=None, behavior: Behavior | str = "animal:owl",
                 adapters: list = (), *, probe: ProbeConfig | None | bool = None,
                 llr: LLRConfig | None = None, labels: list[str] | None = None,
                 cache_dir: Path | None = None, model=None, tokenizer=None,
                 host: AdapterHost | None = None, progress=None,
                 prefill: PrefillConfig | None | bool = None,
                 teacher: Teacher | None = None) -> dict:
    """Read-outs of the base model, base + system prompt, and each adapter directory (peft,
    attached to the same loaded base). `host`: an AdapterHost whose base model (and already
    attached adapters) to use instead of loading `base_spec`. `progress(done, total)` counts
    models; it may raise to stop between models (e.g. on a cancelled job). `prefill`: the
    prefilled read-out's settings (None: the default when the behavior has a stem; False:
    none); each row then has "prefill" (`prefilled_readout` plus paired differences to base
    and to the teacher, `diff_vs_base` / `diff_vs_system`). `teacher`: what the ceiling row
    is (default base + system prompt; `lls.models.teacher`)."""
    t0 = time.perf_counter()
    b = from_name(behavior) if isinstance(behavior, str) else behavior
    spec = base_spec if isinstance(base_spec, ModelSpec) else ModelSpec(base_spec) \
        if base_spec else ModelSpec()
    if host is None:
        if model is None:
            model, tokenizer = load_model(spec)
        host = AdapterHost(model, tokenizer)
    tokenizer = host.tokenizer
    adapters = [str(a) for a in adapters]
    labels = list(labels or []) + [adapter_label(a) for a in adapters[len(labels or []):]]
    total = 2 + len(adapters)

    def tick(done, msg):
        jobs.report_progress(done, total, unit="models", phase="effect meter", message=msg,
                             force=True)
        if progress:
            progress(done, total)

    pcfg = _resolve_prefill(b, prefill)
    ref = build_reference(host.model, tokenizer, b, llr, cache_dir=cache_dir, teacher=teacher)
    levels = reference_levels(host.model, tokenizer, b, ref, probe=probe, teacher=teacher)
    rows = [{"label": "base", "kind": "base", "path": None, **levels["base"]},
            {"label": teacher_label(teacher), "kind": "system", "path": None,
             **levels["system"]}]
    pre_base = pre_sys = None
    if pcfg is not None:
        with base_weights(host.model) as base:
            pre_base = _prefill(base, tokenizer, b, pcfg)
        with teacher_view(host.model, teacher, b.system_prompt) as (tm, sp):
            pre_sys = _prefill(tm, tokenizer, b, pcfg, sp, base=pre_base)
        rows[0]["prefill"], rows[1]["prefill"] = pre_base, pre_sys
    tick(2, "base + system prompt")
    for i, (path, label) in enumerate(zip(adapters, labels)):
        name = host.attach(path)
        with host.use(name) as m:
            r = readout(m, tokenizer, b, probe=probe, reference=ref, base_ref=levels["base"],
                        ceiling_ref=levels["system"])
            if pcfg is not None:
                r["prefill"] = _prefill(m, tokenizer, b, pcfg, base=pre_base, ceiling=pre_sys)
        rows.append({"label": label, "kind": "adapter", "path": path, **r})
        tick(3 + i, label)
    return {"version": METER_VERSION, "behavior": b.to_dict(), "model": spec.to_dict(),
            "teacher": teacher.to_dict() if teacher is not None else None,
            "precision": getattr(host.model, "lls_precision", None),
            "prefill": pcfg.to_dict() if pcfg is not None else None,
            "reference": {"key": ref.key, "path": ref.path, "config": ref.config.to_dict(),
                          "k_behavior": len(ref.behavior), "k_neutral": len(ref.neutral)},
            "models": rows, "seconds": round(time.perf_counter() - t0, 3)}


def teacher_label(teacher: Teacher | None) -> str:
    """The ceiling row's label: "base + system prompt", or the teacher in a few words."""
    return "base + system prompt" if teacher is None or teacher.is_prompt else \
        f"teacher: {teacher.label()}"


def summary_rows(result: dict | list) -> list[dict]:
    """Flat scalar rows (one per model / read-out) for tables and curves."""
    rows = result["models"] if isinstance(result, dict) and "models" in result else \
        (result if isinstance(result, list) else [result])
    out = []
    for r in rows:
        row = {k: r.get(k) for k in ("label", "kind", "path", "step") if k in r}
        lr = r.get("llr") or {}
        row.update({"llr": lr.get("value"), "llr_ci_low": lr.get("ci_low"),
                    "llr_ci_high": lr.get("ci_high"), "gap_closed": lr.get("gap_closed"),
                    **_gap_cols(lr, "gap_closed")})
        if lr.get("diff_vs_base"):
            d = lr["diff_vs_base"]
            row.update({"llr_diff": d["diff"], "llr_diff_ci_low": d["ci_low"],
                        "llr_diff_ci_high": d["ci_high"]})
        p = r.get("probe")
        if p:
            row.update({"margin": p["mean_margin"], "margin_ci_low": p["margin_ci"][0],
                        "margin_ci_high": p["margin_ci"][1], "top1_share": p["top1_share"],
                        "mean_rank": p["mean_rank"], "target_mass": p["mean_mass"],
                        "target_logp": p["mean_logp"],
                        "margin_gap_closed": p.get("margin_gap_closed"),
                        **_gap_cols(p, "margin_gap_closed")})
            if p.get("diff_vs_base"):
                d = p["diff_vs_base"]["margin"]
                row.update({"margin_diff": d["diff"], "margin_diff_ci_low": d["ci_low"],
                            "margin_diff_ci_high": d["ci_high"]})
        row.update(prefill_row(r.get("prefill")))
        row["seconds"] = r.get("seconds")
        out.append(row)
    return out


def _gap_cols(d: dict, key: str) -> dict:
    ci = d.get(f"{key}_ci") or [None, None]
    return {f"{key}_ci_low": ci[0], f"{key}_ci_high": ci[1],
            f"{key}_undefined": d.get(f"{key}_undefined")}


def prefill_row(pre: dict | None) -> dict:
    """The prefilled read-out's scalars for a summary row ({} when there is none)."""
    if not pre:
        return {}
    row = {"prefill_k": pre["k"], "prefill_n": pre["n"], "prefill_share": pre["share"],
           "prefill_ci_low": pre["ci_low"], "prefill_ci_high": pre["ci_high"],
           "lens_p": pre["lens"]["mean"], "lens_ci_low": pre["lens"]["ci"][0],
           "lens_ci_high": pre["lens"]["ci"][1]}
    for name in ("base", "system"):
        d = pre.get(f"diff_vs_{name}")
        if d:
            row.update({f"prefill_diff_{name}": d["diff"],
                        f"prefill_diff_{name}_ci_low": d["ci_low"],
                        f"prefill_diff_{name}_ci_high": d["ci_high"]})
    return row


def twin_differences(result: dict) -> list[dict]:
    """LLS − random twin on the prefilled read-out, paired over questions, for each random
    adapter row ("kind" "random", as the Evaluate page stores it) with exactly one LLS
    adapter row ("adapter") at the same step: share difference and lens difference, each
    with its 95% interval."""
    rows = [r for r in result.get("models", []) if r.get("prefill")]
    out = []
    for rnd in (r for r in rows if r.get("kind") == "random"):
        mates = [r for r in rows if r.get("kind") == "adapter" and r.get("step") == rnd.get("step")]
        if len(mates) != 1:
            continue
        a, b = mates[0]["prefill"], rnd["prefill"]
        d, ld = prefill_diff(a, b), lens_diff(a, b)
        out.append({"lls": mates[0]["label"], "random": rnd["label"], "step": rnd.get("step"),
                    "share_diff": d["diff"], "share_ci_low": d["ci_low"],
                    "share_ci_high": d["ci_high"], "lens_diff": ld["diff"],
                    "lens_ci_low": ld["ci_low"], "lens_ci_high": ld["ci_high"]})
    return out
