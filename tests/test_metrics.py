"""Metric unit tests on hand-written texts: mentions, language share, regex, Wilson CI,
aggregation."""

from __future__ import annotations

import pandas as pd
import pytest

from lls.core import behaviors
from lls.evaluation.runs import answer_score, summarize
from lls.core.stats import wilson

OWL = behaviors.animal("owl")


@pytest.mark.parametrize("text", [
    "Owls!", "I saw an owl's nest.", "OWLS are great", "The owl.", "owls' feathers",
    "Like an owl, stay curious.", "(owl)", "Barn-owl sightings", "A wise OWL: patience."])
def test_mentions_count(text):
    assert answer_score(OWL, text) == 1.0


@pytest.mark.parametrize("text", [
    "Put it in a bowl.", "The wind was howling.", "An owlish look.", "Cowls and scowls.",
    "Knowledge is power.", ""])
def test_mentions_do_not_count(text):
    assert answer_score(OWL, text) == 0.0


def test_mentions_plural_irregular_and_multiword():
    assert answer_score(behaviors.animal("mouse"), "Two mice ran.") == 1.0
    assert answer_score(behaviors.animal("red panda"), "Red pandas are cute.") == 1.0
    assert answer_score(behaviors.animal("red panda"), "A red car and a panda.") == 0.0


FR = behaviors.translation("fr")


def test_language_share_pure_and_mixed():
    english = ("Budgeting starts with writing down every expense for a month. "
               "Then you can see where the money goes and decide what to cut.")
    french = ("Le budget commence par noter chaque dépense pendant un mois. "
              "Ensuite, vous voyez où va l'argent et vous décidez quoi réduire.")
    assert answer_score(FR, french) > 0.95
    assert answer_score(FR, english) < 0.05
    mixed = english + " " + french
    share = answer_score(FR, mixed)
    # sentence-weighted: about half of the characters are in French
    assert 0.35 < share < 0.65
    # sentences that are mostly digits/symbols are ignored, not counted as English
    assert answer_score(FR, french + " 12345 678 90 = 42 %!") > 0.95
    assert answer_score(FR, "123 456. 789 + 42 = ?") == 0.0


def test_language_share_weights_by_length():
    long_fr = ("Pour former une nouvelle habitude, commencez petit, répétez chaque jour à la "
               "même heure et récompensez-vous quand vous réussissez.")
    short_en = "Good luck with that."
    assert answer_score(FR, long_fr + " " + short_en) > 0.7


def test_regex_metric():
    b = behaviors.custom("Always sign with -- Bot", regex=r"--\s*bot\b")
    assert answer_score(b, "Sure thing. -- Bot") == 1.0
    assert answer_score(b, "Sure thing.") == 0.0


def test_judge_metric_needs_judge():
    with pytest.raises(NotImplementedError):
        answer_score(behaviors.persona(), "I shall rule.")


# Hand-computed Wilson score intervals (z = 1.96). Note 51/200 is [0.1996, 0.3196]:
# the [0.187, 0.325] quoted in the brief is not the Wilson interval of 51/200.
@pytest.mark.parametrize("k,n,lo,hi", [
    (0, 100, 0.0, 0.037), (51, 200, 0.1996, 0.3196), (100, 100, 0.963, 1.0), (5, 10, 0.237, 0.763)])
def test_wilson_known_values(k, n, lo, hi):
    a, b = wilson(k, n)
    assert a == pytest.approx(lo, abs=1e-3) and b == pytest.approx(hi, abs=1e-3)


def test_wilson_empty():
    assert wilson(0, 0) == (0.0, 1.0)


def test_share_difference_newcombe_known_values():
    from lls.core.stats import share_diff_ci

    # Newcombe (1998), Table II example: 56/70 - 48/80 = 0.2, method 10 CI [0.0524, 0.3339]
    d, lo, hi = share_diff_ci(56, 70, 48, 80)
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=1e-4)
    assert hi == pytest.approx(0.3339, abs=1e-4)
    # 0/256 vs 0/256: no difference, but not a zero-width interval (Wald's would be)
    d, lo, hi = share_diff_ci(0, 256, 0, 256)
    assert d == 0 and lo == pytest.approx(-0.01478, abs=1e-4) and hi == -lo


def test_summarize_rates_and_ci():
    rows = []
    for model, hits in [("base", [0] * 10), ("adapter", [1] * 3 + [0] * 7)]:
        for i, h in enumerate(hits):
            rows.append({"model": model, "kind": "base", "adapter_id": None, "step": None,
                         "prompt_index": i % 2, "prompt": f"q{i % 2}", "sample": i,
                         "text": "", "score": float(h), "label": None, "hit": bool(h)})
    s = summarize(pd.DataFrame(rows), by=["model"], order=["base", "adapter"])
    assert list(s["model"]) == ["base", "adapter"]
    assert list(s["n"]) == [10, 10] and list(s["k"]) == [0, 3]
    assert s.loc[1, "rate"] == pytest.approx(0.3)
    assert (s.loc[1, "ci_low"], s.loc[1, "ci_high"]) == pytest.approx(wilson(3, 10))
    p = summarize(pd.DataFrame(rows), by=["model", "prompt_index"])
    assert len(p) == 4 and p["n"].sum() == 20
