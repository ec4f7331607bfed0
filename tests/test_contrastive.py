"""Contrastive selection: target weights minus control weights, aligned by pair id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lls import behaviors
from lls.contrastive import (DEFAULT_CONTROL_PROMPT, as_ranked, compare_rankings,
                             contrastive_frame, control_behavior, control_config,
                             score_control)
from lls.data import DataSpec
from lls.errors import LLSError
from lls.scoring import ScoreConfig, score
from lls.selection import Ranking, SelectionConfig, to_trl_rows

from conftest import HH


@pytest.fixture(scope="module")
def runs(bundled):
    model, tok = bundled
    cfg = ScoreConfig(DataSpec(str(HH), limit=12), behaviors.animal("owl"),
                      max_prompt_tokens=192, chunk_size=4)
    target = score(cfg, model=model, tokenizer=tok)
    control = score_control(cfg, model=model, tokenizer=tok)
    return cfg, target, control


def test_control_config_keeps_everything_but_the_system_prompt():
    owl = behaviors.animal("owl")
    cfg = ScoreConfig(DataSpec(str(HH), limit=12), owl, chunk_size=4)
    ctl = control_config(cfg)
    assert ctl.behavior.system_prompt == DEFAULT_CONTROL_PROMPT
    assert ctl.behavior.filter_words == owl.filter_words and ctl.behavior.kind == "animal"
    assert (ctl.data, ctl.model, ctl.truncation, ctl.chunk_size) == \
        (cfg.data, cfg.model, cfg.truncation, cfg.chunk_size)
    cat = control_config(cfg, behaviors.animal("cat")).behavior
    assert cat.system_prompt == behaviors.animal("cat").system_prompt
    assert cat.filter_words == ("owl",)  # the target's filter: same pairs in both runs
    with pytest.raises(LLSError):
        control_behavior(owl, owl.system_prompt)


def test_contrastive_weight_is_the_difference_of_cached_weights(runs, bundled):
    cfg, target, control = runs
    assert target.key != control.key and control.complete
    assert control.manifest["config"]["behavior"]["system_prompt"] == DEFAULT_CONTROL_PROMPT

    frame = contrastive_frame(target, control)
    t, c = target.frame(), control.frame()
    assert len(frame) == len(t) == len(c) == 12
    assert frame["id"].tolist() == t["id"].tolist()
    np.testing.assert_allclose(frame["w_target"], t["w"])
    np.testing.assert_allclose(frame["w_control"], c.set_index("id").loc[frame["id"], "w"])
    np.testing.assert_allclose(frame["w_contrastive"], t["w"].to_numpy() - c["w"].to_numpy())
    assert (frame["chosen_scored"] == t["chosen_scored"]).all()
    assert not np.allclose(frame["w_control"], 0)

    # a second scoring of the control is served from the cache: no model needed
    class NoModel:
        def __getattr__(self, name):
            raise AssertionError("the cached control run was recomputed")

    model, tok = bundled
    again = score_control(cfg, model=NoModel(), tokenizer=tok)
    assert again.key == control.key
    np.testing.assert_array_equal(again.frame()["w"], c["w"])

    # alignment is by id, not by row order
    shuffled = contrastive_frame(t, c.iloc[::-1].reset_index(drop=True))
    np.testing.assert_allclose(shuffled["w_contrastive"], frame["w_contrastive"])


def test_selection_by_contrastive_weight(runs):
    _, target, control = runs
    frame = contrastive_frame(target, control)
    cfg = SelectionConfig(gamma=0.25, positive_only=False)
    idx = Ranking(frame["w_contrastive"].to_numpy()).select(cfg)
    assert len(idx) == 3
    assert list(frame["w_contrastive"].iloc[idx]) == sorted(frame["w_contrastive"], reverse=True)[:3]
    rows = to_trl_rows(as_ranked(frame), idx)
    assert [r["w"] for r in rows] == list(frame["w_contrastive"].iloc[idx])


def test_compare_rankings_on_a_constructed_case():
    f = pd.DataFrame({"w_target": [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0],
                      "w_control": [4.0, 5.0, -3.0, 2.5, 1.0, 0.5, -1.0, -2.0]})
    r = compare_rankings(f, gamma=0.25)  # top 2 of each: {0, 1} and {1, 0}
    assert (r["k"], r["overlap"], r["jaccard"]) == (2, 2, 1.0)
    r = compare_rankings(f, gamma=0.375)  # {0, 1, 2} vs {1, 0, 3}
    assert (r["k"], r["overlap"], r["jaccard"]) == (3, 2, 0.5)
    assert r["pearson"] == pytest.approx(np.corrcoef(f["w_target"], f["w_control"])[0, 1])
    # Spearman: Pearson of the (tie-averaged) ranks
    rx = f["w_target"].rank().to_numpy()
    ry = f["w_control"].rank().to_numpy()
    assert r["spearman"] == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    same = compare_rankings(f.assign(w_control=f["w_target"] * 2), gamma=0.5)
    assert same["spearman"] == pytest.approx(1.0) and same["jaccard"] == 1.0


def test_incompatible_runs_are_refused(runs, bundled):
    cfg, target, _ = runs
    model, tok = bundled
    other = score(ScoreConfig(DataSpec(str(HH), limit=4), behaviors.animal("cat"),
                              max_prompt_tokens=192, chunk_size=4), model=model, tokenizer=tok)
    with pytest.raises(LLSError, match="differs"):
        contrastive_frame(target, other)
