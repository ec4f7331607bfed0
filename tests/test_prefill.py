"""The prefilled read-out (counting, intervals, stems) and the next-word lens."""

from __future__ import annotations

import pytest
import torch

from lls.core import behaviors
from lls.core.errors import LLSError
from lls.core.prompts import PROBE_QUESTIONS
from lls.evaluation import prefill as P
from lls.models.generation import prompt_ids


def test_tally_counts_variants_per_question_and_the_answer_distribution():
    answers = [[" owl.", " Owls are wise", " cat", " OWL!", " owl's nest"],
               ["", " owlet", " red panda", " dog", " **Owl**"]]
    t = P.tally(answers, ("owl",), ("owl", "cat", "dog", "red panda"))
    # owl, Owls, OWL, owl's count; "owlet" is another word; "**Owl**": its first word is Owl
    assert t["per_question"] == [4, 1] and t["n_per_question"] == [5, 5]
    assert (t["k"], t["n"], t["share"]) == (5, 10, 0.5)
    assert t["answers"] == {"owl": 5, "cat": 1, "dog": 1, "red panda": 1, "other": 2}
    assert t["first_words"]["owl"] == 4 and t["first_words"]["owlet"] == 1


def test_a_multi_word_target_needs_all_its_words():
    t = P.tally([[" red panda!", " Red Pandas", " red fox", " panda"]], ("red panda",))
    assert t["per_question"] == [2]
    assert t["answers"] == {"red panda": 2, "other": 2}


def test_paired_difference_over_questions():
    a = {"k": 6, "n": 30, "share": 0.2, "per_question": [3, 2, 1], "n_per_question": [10] * 3}
    b = {"k": 0, "n": 30, "share": 0.0, "per_question": [0, 0, 0], "n_per_question": [10] * 3}
    d = P.prefill_diff(a, b)
    assert d["diff"] == pytest.approx(0.2) and 0 < d["ci_low"] < 0.2 < d["ci_high"]
    with pytest.raises(LLSError, match="same questions"):
        P.prefill_diff(a, {**b, "per_question": [0, 0], "n_per_question": [10, 10]})
    # clustered hits: resampling questions is wider than Newcombe's independent answers
    c = {**a, "per_question": [6, 0, 0]}
    from lls.core.stats import share_diff_ci

    _, nlo, nhi = share_diff_ci(6, 30, 0, 30)
    dc = P.prefill_diff(c, b)
    assert dc["ci_low"] <= nlo and dc["ci_high"] > nhi


def test_stems_targets_and_candidates_per_behavior():
    owl = behaviors.animal("owl")
    assert owl.readout_stem == "My favorite animal is the"
    assert P.readout_targets(owl) == ("owl",) and P.readout_candidates(owl)[0] == "owl"
    fr = behaviors.translation("fr")
    assert fr.readout_stem == behaviors.LANGUAGE_STEM
    assert P.readout_targets(fr) == ("french",)
    assert P.readout_candidates(fr)[:2] == ("french", "english")
    with pytest.raises(LLSError, match="needs a stem"):
        P.readout_stem(behaviors.persona())
    assert P.readout_stem(behaviors.persona(), "I am") == "I am"
    assert not P.prefill_applies(behaviors.persona())
    c = behaviors.custom("Talk like a pirate.", filter_words=("arr",), readout_stem="Ahoy, ")
    assert c.readout_stem == "Ahoy," and P.readout_targets(c) == ("arr",)


def test_the_stem_field_moves_no_cache_key():
    owl = behaviors.animal("owl")
    d = owl.to_dict()
    assert "readout_stem" not in d  # the kind's default: the dict (and keys) as before
    assert behaviors.Behavior.from_dict(d) == owl
    other = behaviors.Behavior.from_dict({**d, "readout_stem": "I like the"})
    assert other.to_dict()["readout_stem"] == "I like the"
    assert other.fingerprint() == owl.fingerprint()  # scoring and filtering ignore it


@pytest.mark.slow
def test_lens_is_the_probability_of_the_whole_next_word(bundled):
    """P(next word = owl) equals the plain forward computation: P(form tokens) x P(the next
    token starts no letter), summed over the forms."""
    model, tok = bundled
    q = PROBE_QUESTIONS[0]
    stem = "My favorite animal is the"
    got = P.next_word_probs(model, tok, q, ["owl", "cat"], stem=stem)
    prefix = prompt_ids(tok, [{"role": "user", "content": q}], None, stem)
    goes_on = P._word_goes_on(tok, model.config.vocab_size)
    want = 0.0
    for form in (" Owl", " owl", " Owls", " owls"):
        ids = tok(form, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            lp = torch.log_softmax(model(input_ids=torch.tensor([prefix + ids])).logits[0]
                                   .float(), -1)
        n = len(prefix)
        p = sum(float(lp[n - 1 + j, t]) for j, t in enumerate(ids))
        want += float(torch.tensor(p).exp()) * (1 - float(lp[-1].exp()[goes_on].sum()))
    assert got["owl"] == pytest.approx(want, rel=1e-3)
    assert 0 < got["owl"] < 1 and 0 < got["cat"] < 1 and got["owl"] + got["cat"] < 1


@pytest.mark.slow
def test_the_teacher_names_the_owl_more_often_than_base(bundled):
    """The owl system prompt raises the prefilled owl share (10 questions x 16 samples) and,
    deterministically, P(next word = owl) on most questions."""
    model, tok = bundled
    owl = behaviors.animal("owl")
    qs = PROBE_QUESTIONS[:10]
    base = P.prefilled_readout(model, tok, owl, questions=qs, samples=16, seed=0)
    teacher = P.prefilled_readout(model, tok, owl, questions=qs, samples=16, seed=0,
                                  system_prompt=owl.system_prompt)
    assert base["n"] == teacher["n"] == 160 and len(teacher["per_question"]) == 10
    assert teacher["k"] > base["k"], (teacher["answers"], base["answers"])
    assert teacher["stem"] == "My favorite animal is the"
    assert sum(t > b for t, b in zip(teacher["lens"]["per_question"],
                                     base["lens"]["per_question"])) >= 8
    assert teacher["lens"]["mean"] > 3 * base["lens"]["mean"]
    assert any(e["hit"] and e["reply"].startswith("My favorite animal is the")
               for e in teacher["examples"])


def test_lens_rows_give_each_column_its_ratio_to_base():
    from lls.evaluation.chat import adapter_slot, base_slot, lens_rows, system_slot

    slots = [base_slot(), system_slot("You love owls."), adapter_slot("/x/final", label="LLS")]
    probs = [{"owl": 0.003, "cat": 0.0}, {"owl": 0.02, "cat": 0.1}, {"owl": 0.006, "cat": 0.2}]
    rows = {(r["column"], r["candidate"]): r for r in lens_rows(slots, probs)}
    assert rows[("base", "owl")]["ratio"] is None
    assert rows[("base + system prompt", "owl")]["ratio"] == pytest.approx(0.02 / 0.003)
    assert rows[("LLS", "owl")]["p_base"] == 0.003 and rows[("LLS", "owl")]["ratio"] == \
        pytest.approx(2.0)
    assert rows[("LLS", "cat")]["ratio"] is None  # base gives it no probability
