"""The transfer diagnostic on real small scoring runs of the bundled model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lls.core import behaviors
from lls.data.source import DataSpec
from lls.core.errors import LLSError, ModelError
from lls.models.load import ModelSpec
from lls.scoring.runs import ScoreConfig, ScoreRun, score
from lls.scoring.selection import top_count
from lls.scoring.transfer import (aligned_weights, compare_runs, same_pairs, student_config,
                          student_runs, submit_student_scoring)

from conftest import HH

pytestmark = pytest.mark.slow


def _cfg(animal: str, **kw) -> ScoreConfig:
    return ScoreConfig(DataSpec(str(HH), limit=10), behaviors.animal(animal), truncation=8,
                       max_prompt_tokens=160, chunk_size=5, **kw)


@pytest.fixture(scope="module")
def runs(bundled):
    model, tok = bundled
    return tuple(score(_cfg(a), model=model, tokenizer=tok) for a in ("owl", "dolphin"))


def _student_run(owl: ScoreRun, tmp_path, name: str, w=None, ids=None, reorder=None,
                 **config) -> ScoreRun:
    """A fake run of owl's pairs "scored by another model": owl's table with weights `w`
    (and pair ids `ids`), rows in `reorder` order, the manifest's model (and `config`)
    changed. Outside the session cache, so other tests' run lists never see it."""
    import pyarrow as pa

    from lls.core.cache import ChunkStore

    t = owl.table()
    if w is not None:
        t = t.set_column(t.schema.get_field_index("w"), "w", pa.array(np.asarray(w, float)))
    if ids is not None:
        t = t.set_column(t.schema.get_field_index("id"), "id", pa.array(ids))
    if reorder is not None:
        t = t.take(pa.array(reorder))
    store = ChunkStore(tmp_path / name)
    store.write_chunk(0, t)
    cfg = {**owl.manifest["config"], "model": {**owl.manifest["config"]["model"],
                                               "name": "hub:someone/student"}, **config}
    store.write_manifest({**owl.manifest, "key": store.key, "config": cfg})
    return ScoreRun(store)


def _w(run: ScoreRun) -> np.ndarray:
    return run.frame()["w"].to_numpy(np.float64)


def test_identical_runs_agree_perfectly(runs):
    owl, _ = runs
    res = compare_runs(owl, owl.key, gamma=0.2)
    k = min(top_count(10, 0.2), int((_w(owl) > 0).sum()))  # what training on A keeps
    assert k >= 1
    assert res["n"] == res["n_a"] == res["n_b"] == 10
    assert abs(res["pearson"] - 1) < 1e-9 and abs(res["spearman"] - 1) < 1e-9
    assert res["pearson_ci"] == pytest.approx((1.0, 1.0), abs=1e-9)
    assert res["selected_a"] == res["selected_b"] == res["intersection"] == k
    assert res["overlap_a"] == 1.0 and res["jaccard"] == 1.0
    assert "paper" in res["reading"]


def test_student_weights_aligned_by_pair_id(runs, tmp_path):
    """B: A's pairs in reversed row order with w_B = 2 w_A + 1 (same ranking): alignment by
    id gives correlations of exactly 1 and the same top-gamma selection."""
    owl, _ = runs
    w = _w(owl)
    b = _student_run(owl, tmp_path, "affine", w=2 * w + 1, reorder=list(range(10))[::-1])
    frame = aligned_weights(owl, b)
    assert len(frame) == 10
    np.testing.assert_allclose(frame["w_b"], 2 * frame["w_a"] + 1)
    res = compare_runs(owl, b, gamma=0.5)
    assert abs(res["pearson"] - 1) < 1e-9 and abs(res["spearman"] - 1) < 1e-9
    # B's weights are all >= 1 - 2 max|w|, so positive_only may keep more of B than of A
    assert res["selected_a"] == min(5, int((w > 0).sum()))
    assert res["intersection"] == res["selected_a"]


def test_reversed_weights_disagree_completely(runs, tmp_path):
    """w_B = -w_A: Pearson and Spearman are -1, and the two positive top sets are disjoint."""
    owl, _ = runs
    w = _w(owl)
    b = _student_run(owl, tmp_path, "negated", w=-w)
    res = compare_runs(owl, b, gamma=0.5)
    assert abs(res["pearson"] + 1) < 1e-9 and abs(res["spearman"] + 1) < 1e-9
    assert res["pearson_ci"] == pytest.approx((-1.0, -1.0), abs=1e-9)
    assert res["selected_a"] == min(5, int((w > 0).sum()))
    assert res["selected_b"] == min(5, int((w < 0).sum()))
    assert res["intersection"] == 0 and res["jaccard"] == 0.0 and res["overlap_a"] == 0.0


def test_only_runs_of_the_same_pairs_and_prompt_compare(runs, tmp_path):
    """One strict check: another system prompt or truncation is refused, another model is
    not; the page's run-B list uses the same check."""
    owl, dolphin = runs
    assert same_pairs(owl, owl) and not same_pairs(owl, dolphin)
    with pytest.raises(LLSError, match="differ in 'behavior'"):
        compare_runs(owl, dolphin)
    other_trunc = _student_run(owl, tmp_path, "trunc", truncation=16)
    with pytest.raises(LLSError, match="differ in 'truncation'"):
        compare_runs(owl, other_trunc)
    student = _student_run(owl, tmp_path, "student")
    assert same_pairs(owl, student)
    assert [r.key for r in student_runs(owl, [owl, dolphin, other_trunc, student])] == \
        [student.key]


def test_student_config_and_offline_error(runs, tmp_path):
    owl, _ = runs
    other = student_config(owl.config, ModelSpec("someone/not-downloaded-model"))
    assert other.data == owl.config.data and other.behavior == owl.config.behavior
    assert other.truncation == owl.config.truncation and other.model.name.startswith("someone")
    with pytest.raises(ModelError, match="offline|download"):
        submit_student_scoring(owl, ModelSpec("someone/not-downloaded-model"))
    with pytest.raises(ModelError):
        submit_student_scoring(owl, ModelSpec(str(tmp_path)))  # a dir without weights
    # the bundled model scored these pairs already: nothing to submit
    job, cfg = submit_student_scoring(owl, ModelSpec())
    assert job is None and cfg.model == ModelSpec()


def test_no_common_pairs_is_a_clear_error(runs, tmp_path):
    owl, _ = runs
    disjoint = _student_run(owl, tmp_path, "disjoint", ids=[f"x-{i}" for i in range(10)])
    with pytest.raises(LLSError, match="no pair ids in common"):
        compare_runs(owl, disjoint)


def test_cli_transfer(runs, capsys):
    from lls.cli import main

    owl, dolphin = runs
    assert main(["transfer", owl.key, owl.key[:8], "--gamma", "0.3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_a"] == out["run_b"] == owl.key and out["gamma"] == 0.3
    assert main(["transfer", owl.key, dolphin.key[:8]]) == 2  # another system prompt
    assert "differ in 'behavior'" in capsys.readouterr().err
