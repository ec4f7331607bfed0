"""Selection (top gamma, threshold, random baseline) and DPO-ready export."""

import json
import math

import numpy as np
import pytest

from lls.core.errors import LLSError
from lls.scoring.selection import Ranking, SelectionConfig, export, random_subset, select


def test_top_gamma_of_whole_dataset_positive_only():
    w = np.array([0.5, -0.1, 0.2, 0.0, 0.3, -0.4, 0.1, 0.05, -0.2, 0.01])
    idx = select(w, SelectionConfig(gamma=0.25))
    assert list(idx) == [0, 4, 2]  # ceil(0.25 * 10) = 3, highest first
    # positive-only caps the count at the positive weights
    assert len(select(w, SelectionConfig(gamma=1.0))) == 6
    assert len(select(w, SelectionConfig(gamma=1.0, positive_only=False))) == 10
    assert list(select(w, SelectionConfig(threshold=0.1))) == [0, 4, 2]
    r = Ranking(w)
    assert r.cutoff(SelectionConfig(gamma=0.25)) == 0.2 and r.n_positive == 6


def test_ranking_counts_match_brute_force():
    rng = np.random.default_rng(0)
    w = rng.normal(size=1000)
    r = Ranking(w)
    for g in (0.01, 0.05, 0.3, 0.9):
        for pos in (True, False):
            k = math.ceil(g * 1000)
            expect = min(k, int((w > 0).sum())) if pos else k
            assert r.count(SelectionConfig(gamma=g, positive_only=pos)) == expect
    for t in (-1.0, 0.0, 0.7):
        assert r.count(SelectionConfig(threshold=t, positive_only=False)) == int((w > t).sum())


def test_random_subset_is_seeded_and_same_size():
    a, b, c = random_subset(100, 10, 1), random_subset(100, 10, 1), random_subset(100, 10, 2)
    assert len(set(a)) == 10 and list(a) == list(b) and list(a) != list(c)
    with pytest.raises(LLSError):
        random_subset(5, 6)


def test_bad_gamma():
    with pytest.raises(LLSError, match="gamma"):
        SelectionConfig(gamma=0)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_export_is_dpo_ready(small_run, tmp_path, fmt):
    from datasets import load_dataset, load_from_disk

    frame = small_run.frame()
    idx = select(frame["w"].to_numpy(), SelectionConfig(gamma=0.25))
    path = tmp_path / {"jsonl": "sel.jsonl", "parquet": "sel.parquet", "hf": "sel"}[fmt]
    export(frame, idx, path, fmt=fmt, settings={"run": small_run.key, "gamma": 0.25})
    if fmt == "hf":
        ds = load_from_disk(str(path))
        assert json.loads(ds.info.description)["lls"]["run"] == small_run.key
    else:
        ds = load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(path),
                          split="train")
    assert len(ds) == len(idx) > 0
    row = ds[0]
    assert row["prompt"][-1]["role"] == "user"
    assert row["chosen"][0]["role"] == "assistant"
    assert row["w"] == pytest.approx(frame["w"].max())
    assert row["chosen"][0]["content"] == frame.iloc[idx[0]]["chosen_scored"]
    meta = json.loads((path.parent / (path.name + ".lls.json")).read_text())
    assert meta["lls"]["gamma"] == 0.25 and meta["n"] == len(idx)
