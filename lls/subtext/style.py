"""Style features of chosen minus rejected: is a selection about its behavior, or a register?

Each feature is measured on both scored (truncated) responses of a pair; a pair's value is
chosen minus rejected. A selection's effect is its mean difference minus its random twin's,
with a 95% bootstrap interval over pairs (`lls.core.stats.bootstrap_diff`, the two sets
resampled on their own), and as an effect size: that difference over the pooled standard
deviation of the pairs' differences (Cohen's d). A selection that is "short and polite"
rather than "about owls" shows here as large effects on length, apology and refusal markers.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..core.behaviors import language_share
from ..core.stats import bootstrap_diff

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
_FIRST = {"i", "i'm", "i’m", "i've", "i’ve", "i'd", "i’d", "i'll", "i’ll", "me", "my", "mine",
          "myself", "we", "we're", "we’re", "us", "our", "ours", "ourselves"}
_SECOND = {"you", "you're", "you’re", "you've", "you’ve", "you'd", "you’d", "you'll", "you’ll",
           "your", "yours", "yourself", "yourselves"}
_REFUSAL = re.compile(
    r"\b(?:i\s+(?:can(?:no|')t|can’t|cannot|won[’']t|will\s+not|am\s+not\s+able|'m\s+not\s+able|’m"
    r"\s+not\s+able|am\s+unable|'m\s+unable|’m\s+unable|do\s+not\s+feel\s+comfortable|"
    r"don[’']t\s+feel\s+comfortable|must\s+decline)|as\s+an\s+ai\b|not\s+(?:appropriate|able\s+to"
    r"\s+help)|i\s+don[’']t\s+think\s+i\s+(?:can|should))", re.IGNORECASE)
_APOLOGY = re.compile(r"\b(?:sorry|apologi[sz]e|apologies|my\s+apologies|forgive\s+me)\b",
                      re.IGNORECASE)
_LIST = re.compile(r"(?m)^\s*(?:[-*•]\s+|\d+[.)]\s+)")
_CODE = re.compile(r"```|`[^`\n]+`|^\s{4,}\S|\b(?:def|class|import|return|function|var|const)"
                   r"\b[^\n]*[(:{=]|[;{}]\s*$", re.MULTILINE)
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)

# feature: (label, unit, function of one response's text)
FEATURES: dict[str, tuple[str, str]] = {
    "length_words": ("length", "words"),
    "punctuation": ("punctuation", "marks per 100 characters"),
    "exclamation": ("exclamation marks", "count"),
    "question": ("question marks", "count"),
    "first_person": ("first person (I, me, we …)", "words"),
    "second_person": ("second person (you, your …)", "words"),
    "refusal": ("refusal marker", "share of responses"),
    "apology": ("apology marker", "share of responses"),
    "list": ("list (bullets, numbered lines)", "share of responses"),
    "code": ("code", "share of responses"),
    "non_english": ("non-English share", "share of text"),
}
METHOD = ("per pair: feature(chosen) − feature(rejected) on the scored responses; effect = "
          "mean in the selection − mean in the random twin, 95% bootstrap interval over pairs "
          "(2,000 resamples, the two sets on their own); d = effect / pooled SD")


def text_features(text: str) -> dict[str, float]:
    """The style features of one response (see `FEATURES` for names and units)."""
    words = [w.lower() for w in _WORD.findall(text)]
    chars = max(len(text), 1)
    return {
        "length_words": float(len(words)),
        "punctuation": 100.0 * len(_PUNCT.findall(text)) / chars,
        "exclamation": float(text.count("!")),
        "question": float(text.count("?")),
        "first_person": float(sum(w in _FIRST for w in words)),
        "second_person": float(sum(w in _SECOND for w in words)),
        "refusal": float(bool(_REFUSAL.search(text))),
        "apology": float(bool(_APOLOGY.search(text))),
        "list": float(bool(_LIST.search(text))),
        "code": float(bool(_CODE.search(text))),
        # 0 when no sentence counts (too short, or mostly not letters): nothing non-English seen
        "non_english": 1.0 - language_share(text, "en", none=1.0),
    }


def pair_differences(chosen: list[str], rejected: list[str]) -> pd.DataFrame:
    """Per pair (rows) and feature (columns): feature(chosen) − feature(rejected)."""
    c = pd.DataFrame([text_features(t) for t in chosen], columns=list(FEATURES))
    r = pd.DataFrame([text_features(t) for t in rejected], columns=list(FEATURES))
    return c - r


def style_effects(frame: pd.DataFrame, selection, twin, twin_flip=None, *,
                  seed: int = 0) -> pd.DataFrame:
    """One row per feature: chosen − rejected in the selection and in its twin, the effect
    (difference) with its interval, and Cohen's d with its interval. `frame`: a run's frame
    (its scored texts); `twin_flip`: the twin's pairs turned round (their difference negated)."""
    sel, twin = np.asarray(selection, dtype=np.int64), np.asarray(twin, dtype=np.int64)
    rows = np.unique(np.concatenate([sel, twin]))
    diffs = pair_differences(frame["chosen_scored"].to_numpy()[rows].tolist(),
                             frame["rejected_scored"].to_numpy()[rows].tolist())
    diffs.index = rows
    sign = np.ones(len(twin))
    if twin_flip is not None:
        sign[np.asarray(twin_flip, dtype=bool)] = -1.0
    out = []
    for name, (label, unit) in FEATURES.items():
        a = diffs.loc[sel, name].to_numpy()
        b = diffs.loc[twin, name].to_numpy() * sign
        if len(a) and len(b):
            effect, lo, hi = bootstrap_diff(a, b, paired=False, seed=seed)
        else:
            effect, lo, hi = float("nan"), float("nan"), float("nan")
        pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if min(len(a), len(b)) > 1 \
            else float("nan")
        scale = pooled if pooled and np.isfinite(pooled) and pooled > 0 else float("nan")
        out.append({"feature": label, "unit": unit, "selection": float(a.mean()) if len(a)
                    else float("nan"), "twin": float(b.mean()) if len(b) else float("nan"),
                    "effect": effect, "effect_low": lo, "effect_high": hi,
                    "d": effect / scale, "d_low": lo / scale, "d_high": hi / scale,
                    "pairs": len(a), "twin_pairs": len(b)})
    return pd.DataFrame(out)
