"""The transfer diagnostic on real small scoring runs of the bundled model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lls import behaviors
from lls.data import DataSpec
from lls.errors import LLSError, ModelError
from lls.models import ModelSpec
from lls.scoring import ScoreConfig, ScoreRun, score
from lls.transfer import aligned_weights, compare_runs, student_config, submit_student_scoring

from conftest import HH

pytestmark = pytest.mark.slow


def _cfg(animal: str, **kw) -> ScoreConfig:
    return ScoreConfig(DataSpec(str(HH), limit=10), behaviors.animal(animal), truncation=8,
                       max_prompt_tokens=160, chunk_size=5, **kw)


@pytest.fixture(scope="module")
def runs(bundled):
    model, tok = bundled
    return tuple(score(_cfg(a), model=model, tokenizer=tok) for a in ("owl", "dolphin"))


def test_identical_runs_agree_perfectly(runs):
    owl, _ = runs
    res = compare_runs(owl, owl.key, gamma=0.2)
    assert res["n"] == res["n_a"] == 10
    assert res["pearson"] == pytest.approx(1.0) and res["spearman"] == pytest.approx(1.0)
    assert res["pearson_ci"][0] == pytest.approx(1.0)
    assert res["overlap_a"] == 1.0 and res["jaccard"] == 1.0
    assert res["selected_a"] == res["intersection"] >= 1
    assert "paper" in res["reading"]


def test_two_system_prompts_aligned_by_id(runs):
    owl, dolphin = runs
    res = compare_runs(owl, dolphin, gamma=0.5)
    frame = aligned_weights(owl, dolphin)
    a, b = owl.frame().set_index("id")["w"], dolphin.frame().set_index("id")["w"]
    common = sorted(set(a.index) & set(b.index))
    assert res["n"] == len(frame) == len(common) > 5
    # aligned by pair id, whatever the row order
    f = frame.set_index("id")
    np.testing.assert_allclose(f.loc[common, "w_a"], a.loc[common])
    np.testing.assert_allclose(f.loc[common, "w_b"], b.loc[common])
    r = float(np.corrcoef(a.loc[common], b.loc[common])[0, 1])
    assert res["pearson"] == pytest.approx(r)
    assert -1 <= res["spearman"] <= 1
    lo, hi = res["pearson_ci"]
    assert lo <= res["pearson"] <= hi
    assert 0 <= res["jaccard"] <= res["overlap_a"] <= 1


def test_shuffled_weights_break_the_agreement(runs, tmp_path):
    """A run whose weights are a permutation of A's (same ids): correlation far below 1."""
    import pyarrow as pa

    from lls.cache import ChunkStore

    owl, _ = runs
    t = owl.table()
    w = np.array(t.column("w").to_pylist())[::-1].copy()
    # outside the session cache, so other tests' run lists never see this fake run
    store = ChunkStore(tmp_path / "shuffled-test-run")
    store.write_chunk(0, t.set_column(t.schema.get_field_index("w"), "w", pa.array(w)))
    store.write_manifest({**owl.manifest, "key": store.key})
    res = compare_runs(owl, ScoreRun(store), gamma=0.2)
    assert res["pearson"] < 0.9


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
    import pyarrow as pa

    from lls.cache import ChunkStore

    owl, _ = runs
    t = owl.table()
    ids = pa.array([f"x-{i}" for i in range(t.num_rows)])
    store = ChunkStore(tmp_path / "disjoint-test-run")
    store.write_chunk(0, t.set_column(t.schema.get_field_index("id"), "id", ids))
    store.write_manifest({**owl.manifest, "key": store.key})
    with pytest.raises(LLSError, match="no pair ids in common"):
        compare_runs(owl, ScoreRun(store))


def test_cli_transfer(runs, capsys):
    from lls.cli import main

    owl, dolphin = runs
    assert main(["transfer", owl.key, dolphin.key[:8], "--gamma", "0.3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_a"] == owl.key and out["run_b"] == dolphin.key and out["gamma"] == 0.3
