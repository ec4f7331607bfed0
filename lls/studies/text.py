"""A study in words: the cells table, the verdict line and what the numbers mean, written
once for the command line (`study status`), the Studies page and the HTML report."""

from __future__ import annotations

from ..core.stats import GAP_UNDEFINED
from ..evaluation.readouts import KIND_LABELS

READOUT_NAMES = {"margin": "margin (nats)", "gap_closed": "gap closed", "top1": "top-1 share"}

# What a study's table adds to the glossary's words (`lls.core.glossary`).
STUDY_NOTE = ("Every effect is LLS − its same-size random twin (the same recipe and seed on "
              "random pairs), read at the cell's last step.")
GLOSSARY_TERMS = ("margin", "gap closed", "top-1", "collapse", "random twin", "interval")

METHODS = ("95% intervals: margin and top-1, paired bootstrap over probe questions; gap "
           "closed, paired bootstrap over the reference prompts (the answers to one prompt "
           "stay together) with each resample divided by its own base → system-prompt span "
           f"({GAP_UNDEFINED} when that span's interval includes 0); sampled shares and their "
           "LLS − random difference, bootstrap over questions (answers to one question "
           "cluster), never narrower than the Wilson / Newcombe interval. 2,000 resamples, "
           "seed 0: the same numbers every time. The best cell's verdict corrects for the "
           "search that picked it (Bonferroni over every cell × read-out step compared).")

READ_AT = ("Effects are LLS − random at each cell's last step (the end of its epochs; a "
           "confirmation: its judged step), 95% intervals: paired bootstrap over probe "
           "questions (margin, top-1) or reference prompts (gap closed); sampled shares: "
           "bootstrap over questions.")


def ci_text(r: dict, k: str, d: int = 3) -> str:
    """A paired effect of a table row with its interval, or the undefined text."""
    v = r.get(f"{k}_diff")
    if v is None:
        return GAP_UNDEFINED if r.get(f"{k}_note") else ""
    return f"{v:+.{d}f} [{r[f'{k}_lo']:+.{d}f}, {r[f'{k}_hi']:+.{d}f}]"


def share_text(r: dict, kind: str, who: str, with_ci: bool = True) -> str:
    """'16/512 (3.1% [1.6, 5.0])' of one adapter's sampled read-out ('' when none)."""
    k, n = r.get(f"{kind}:{who}_k"), r.get(f"{kind}:{who}_n")
    if k is None or not n:
        return ""
    lo, hi = r.get(f"{kind}:{who}_ci_low"), r.get(f"{kind}:{who}_ci_high")
    if not with_ci or lo is None:
        return f"{k}/{n}"
    return f"{k}/{n} ({100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}])"


def level_text(x: dict) -> str:
    """'16/512 (3.1% [1.6, 5.0])': a sampled level (base, teacher) with its interval."""
    if x.get("ci_low") is None:
        return f"{x['k']}/{x['n']}"
    return (f"{x['k']}/{x['n']} ({100 * x['share']:.1f}% "
            f"[{100 * x['ci_low']:.1f}, {100 * x['ci_high']:.1f}])")


def pp_text(r: dict, kind: str) -> str:
    """The sampled LLS − random difference in percentage points with its interval."""
    if r.get(f"{kind}:diff") is None:
        return ""
    return (f"{100 * r[f'{kind}:diff']:+.1f} [{100 * r[f'{kind}:lo']:+.1f}, "
            f"{100 * r[f'{kind}:hi']:+.1f}] pp")


def lens_text(r: dict) -> str:
    """'0.34% / 0.15%: ×2.3 [×1.9, ×2.8]': the mean P(next word = target) after the begun
    reply of the LLS adapter and its twin, and their ratio paired over questions."""
    if r.get("lens:ratio") is None:
        return ""
    return (f"{100 * r['lens:lls']:.2f}% / {100 * r['lens:random']:.2f}%: "
            f"×{r['lens:ratio']:.2f} [×{r['lens:lo']:.2f}, ×{r['lens:hi']:.2f}]")


def own_text(r: dict, k: str) -> str:
    """Each adapter's own value beside base's: 'LLS / random (base)'."""
    vals = [r.get(f"{w}_{k}") for w in ("lls", "random", "base")]
    return "" if None in vals else f"{vals[0]:+.2f} / {vals[1]:+.2f} ({vals[2]:+.2f})"


def cost_text(r: dict) -> str:
    """Minutes of training / meter read-outs / sampled read-outs."""
    if r.get("seconds") is None:
        return ""
    return " / ".join(f"{(r.get(f'seconds_{k}') or 0) / 60:.1f}"
                      for k in ("training", "meter", "sampled"))


def collapsed_text(r: dict) -> str:
    if r["status"] != "done":
        return ""
    return ", ".join(w for w in ("lls", "random") if r.get(w + "_collapsed")) or "no"


def cells_table(rows: list[dict], readouts, kinds) -> list[dict]:
    """The cells in words, one dict per cell (`report.table` rows): settings, status, pairs,
    step, each paired read-out with its interval and each adapter's own value, sampled
    counts and their difference per kind, collapse, cost, error."""
    out = []
    for r in rows:
        row = {"Cell": r["label"], "Status": r["status"], "Pairs": r.get("n_pairs") or "",
               "Step": r.get("step") or ""}
        for k in readouts:
            name = READOUT_NAMES.get(k, k)
            row[f"LLS − random, {name}"] = ci_text(r, k)
            row[f"LLS / random (base), {name}"] = "" if r.get(f"{k}_note") else own_text(r, k)
        for kind in kinds:
            short = KIND_LABELS.get(kind, kind)
            row[f"LLS, {short}"] = share_text(r, kind, "lls")
            row[f"random, {short}"] = share_text(r, kind, "random")
            row[f"LLS − random, {short}"] = pp_text(r, kind)
        if "prefilled" in kinds:
            row["next-word lens, LLS / random"] = lens_text(r)
        row["Collapsed"] = collapsed_text(r)
        row["Minutes (train / meter / sampled)"] = cost_text(r)
        row["Error"] = r.get("error") or ""
        out.append(row)
    return out


def markdown_table(table: list[dict]) -> str:
    """A `cells_table` as a Markdown table."""
    if not table:
        return ""
    head = list(table[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        lines.append("| " + " | ".join(str(row.get(h, "")).replace("|", "/") for h in head)
                     + " |")
    return "\n".join(lines)


STATE_WORDS = {"beats": "it beat its random twin after correcting for the search",
               "confirmed": "it beat its random twin, confirmed by a fresh seed",
               "candidate": "a candidate, not a verdict",
               "none": "no cell beat its random twin"}


def effect_text(e: dict | None) -> str:
    if not e or e.get("diff") is None:
        return GAP_UNDEFINED if (e or {}).get("undefined") else "-"
    return f"{e['diff']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]"


def verdict_line(best: dict | None) -> str:
    """The study's verdict in one paragraph: the picked cell and step, its 95% interval,
    the correction for the search (method and N) and what follows."""
    if not best:
        return "No finished cell yet."
    e = best["effect"]
    what = (f"{best['label']} at step {best['step']}: {READOUT_NAMES.get(best['readout'])} "
            f"LLS − random {effect_text(e)} (95%; the largest of {best['n_compared']} "
            "checkpoints compared, cells × read-out steps). ")
    corr = best.get("correction") or {}
    c = best.get("corrected")
    corrected = (f"Corrected for the search ({corr.get('text', '')}): {effect_text(c)}. "
                 if c else f"Correction: {corr.get('text', '?')}; not available for this "
                 "result (run the queue again to re-read it). ")
    state = best.get("state") or ("beats" if best.get("beats_twin") else "none")
    if state == "none":
        return ("No cell beat its random twin: the largest paired effect, " + what +
                best["why_not"][0].upper() + best["why_not"][1:] + ". " + corrected).strip()
    if state == "candidate":
        return ("Candidate (not a verdict): " + what + corrected + "Its interval clears 0 "
                "only before the correction: confirm it with a fresh seed at this step "
                "(`python -m lls study confirm NAME`).")
    conf = ""
    for cf in best.get("confirmations") or []:
        if cf.get("effect"):
            conf += (f" Confirmation with seed {cf['seed']} at step {cf['step']}: "
                     f"{cf['status']}, {effect_text(cf['effect'])}.")
    return f"Best cell ({STATE_WORDS[state]}): " + what + corrected + best["caveat"] + conf
