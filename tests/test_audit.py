"""The audit: which candidate behavior a dataset or a subset leans toward.

Constructed weights with a known answer (fast), and on the bundled model: an LLS subset for
owl ranks owl first among the 8 presets, a random subset ranks none above the panel's noise
(slow)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lls.core.errors import LLSError
from lls.subtext import audit as A

LABELS = [f"animal:{a}" for a in ("owl", "cat", "dog", "fox", "bee", "elk", "yak", "emu")]


def _weights(n=1500, seed=0, shared=0.9) -> A.Weights:
    """Candidates sharing most of their weight (a common style) plus their own part."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=(n, 1))
    own = rng.normal(size=(n, len(LABELS)))
    w = 0.05 * (np.sqrt(shared) * common + np.sqrt(1 - shared) * own)
    ids = np.array([f"p{i}" for i in range(n)])
    frame = pd.DataFrame({"id": ids, "chosen": [f"c{i}" for i in range(n)],
                          "rejected": [f"r{i}" for i in range(n)],
                          "chosen_scored": [f"c{i}" for i in range(n)],
                          "rejected_scored": [f"r{i}" for i in range(n)]})
    return A.Weights(ids, list(LABELS), w, frame, [f"k{j}" for j in range(len(LABELS))],
                     [{"seconds": 10.0, "pairs": n, "neutral_reused": n if j else 0}
                      for j in range(len(LABELS))])


@pytest.mark.parametrize("target", [0, 5])
def test_a_selection_by_one_candidate_ranks_it_first(target):
    wt = _weights()
    top = np.argsort(-wt.w[:, target])[:150]  # what LLS keeps for that candidate
    table, facts = A.audit_table(wt, top, n_boot=500, draws=500)
    assert table.candidate[0] == LABELS[target]
    assert table["rank"].tolist() == list(range(1, 9))
    first = table.iloc[0]
    assert first.above_noise and facts["leans_toward"][0] == LABELS[target]
    assert first.z_low > facts["noise_z"] and first.panel_z > 2
    assert first.ranked_first > 0.9
    assert facts["first_over_second"]["distinct"] and facts["first_over_second"]["low"] > 0
    # the shared style lifts every candidate: all are above noise, but the target most
    assert (table.z > 0).all() and (table.panel_z.iloc[1:] < first.panel_z).all()
    assert first.mean_w_low < first.mean_w < first.mean_w_high
    assert first.seconds_per_pair == pytest.approx(10.0 / 1500)


def test_random_subsets_rank_no_candidate_above_the_noise_but_at_the_nominal_rate():
    wt = _weights(seed=1)
    rng = np.random.default_rng(7)
    flagged = 0
    for i in range(60):
        sub = np.sort(rng.choice(len(wt.ids), size=150, replace=False))
        table, facts = A.audit_table(wt, sub, n_boot=100, draws=500, seed=i)
        flagged += bool(facts["leans_toward"])
        # z against random subsets is standard normal for a random subset
    assert flagged <= 8  # 5% nominal: 3 expected of 60; 8 or more has p < 0.02
    table, facts = A.audit_table(wt, np.arange(0, 1500, 10), n_boot=100, draws=500)
    assert not facts["leans_toward"] and facts["noise_z"] > 1.64


def test_random_subset_z_is_standard_normal():
    wt = _weights(seed=2)
    rng = np.random.default_rng(3)
    zs = np.array([A.audit_table(wt, rng.choice(1500, 200, replace=False), n_boot=20,
                                 draws=20)[0].sort_values("candidate").z.to_numpy()
                   for _ in range(150)])
    assert abs(zs.mean()) < 0.15 and 0.85 < zs.std() < 1.15


def test_whole_dataset_reference_is_no_lean():
    wt = _weights(seed=3)
    wt.w[:, 2] += 0.01  # the data lean toward "dog"
    table, facts = A.audit_table(wt, None, n_boot=200)
    assert facts["subset"] is None and table.candidate[0] == "animal:dog"
    assert facts["leans_toward"] == ["animal:dog"]


def test_subsets_match_by_id_by_text_and_from_an_export(tmp_path):
    wt = _weights(n=50)
    ids = tmp_path / "ids.txt"
    ids.write_text("p3\np7\n\nmissing\n")
    pos, unmatched = A.match_subset(wt, A.read_subset(ids))
    assert pos.tolist() == [3, 7] and unmatched == 1
    rows = [{"id": "elsewhere-1", "prompt": "q", "chosen": "c4", "rejected": "r4"},
            {"id": "p9", "prompt": "q", "chosen": "x", "rejected": "y"},
            {"id": "other", "prompt": "q", "chosen": "zzz", "rejected": "r4"}]
    path = tmp_path / "subset.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    pos, unmatched = A.match_subset(wt, A.read_subset(path))
    assert pos.tolist() == [4, 9] and unmatched == 1
    with pytest.raises(LLSError, match="not found"):
        A.read_subset(tmp_path / "nope.txt")
    with pytest.raises(LLSError, match="at least 2"):
        A.audit_table(wt, np.array([1]))
    with pytest.raises(LLSError, match="at least 2 candidate"):
        A.candidate_configs(None, [])


# ------------------------------------------------------------------ the bundled model

@pytest.mark.slow
def test_an_lls_subset_for_owl_ranks_owl_first_on_the_bundled_model(bundled, tmp_path):
    """150 hh pairs (prompts <= 64 tokens), truncation 32, the 8 presets (the neutral half
    scored once)."""
    from lls.core.behaviors import PRESETS
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, score
    from lls.scoring.selection import SelectionConfig, selection_indices

    from conftest import HH

    model, tok = bundled
    base = ScoreConfig(DataSpec(str(HH), limit=AUDIT_PAIRS), PRESETS["animal:owl"],
                       max_prompt_tokens=AUDIT_PROMPT_TOKENS, chunk_size=64)
    runs = {c.behavior.label(): score(c, model=model, tokenizer=tok)
            for c in A.candidate_configs(base, list(PRESETS.values()))}
    wt = A.aligned_weights(runs)
    assert len(wt.labels) == 8 and len(wt.ids) >= 140
    owl = wt.labels.index("animal:owl")
    top = selection_indices(wt.w[:, owl], SelectionConfig(gamma=0.1))
    table, facts = A.audit_table(wt, top)
    assert table.candidate[0] == "animal:owl" and table.above_noise[0]
    costs = [c for c in wt.costs if c]
    assert all(c["seconds"] > 0 for c in costs)
    rnd = np.sort(np.random.default_rng(0).choice(len(wt.ids), size=len(top), replace=False))
    table, facts = A.audit_table(wt, rnd)
    assert not facts["leans_toward"], table[["candidate", "z"]]


AUDIT_PAIRS = 150
AUDIT_PROMPT_TOKENS = 64
