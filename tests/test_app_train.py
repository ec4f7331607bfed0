"""pages/3_Train.py under streamlit.testing.v1.AppTest, with a real run and a real adapter."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from conftest import HH, ROOT

from lls.jobs import store as jobs
from lls.training import runs as T

TRAIN = str(ROOT / "pages" / "3_Train.py")
TIMEOUT = 120


@pytest.fixture(scope="module")
def run(bundled):
    """The same 24-pair owl run as tests/test_training.py (served from the cache if it ran)."""
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, score

    model, tok = bundled
    cfg = ScoreConfig(data=DataSpec(str(HH), limit=24), behavior=animal("owl"), chunk_size=8,
                      max_prompt_tokens=192)
    return score(cfg, model=model, tokenizer=tok)


@pytest.fixture(scope="module")
def adapter(run):
    from test_training import small_config

    return T.train(small_config(), run.key)  # cached when test_training.py ran first


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_train_page_without_runs_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LLS_CACHE", str(tmp_path))
    at = _ok(AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run())
    assert any("No finished scoring run" in i.value for i in at.info)


def _page_with_selection(run, gamma: float = 0.33) -> AppTest:
    """The Train page with `run` picked, `gamma` set and w <= 0 allowed (8 of 24 pairs)."""
    at = _ok(AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run())
    at.selectbox(key="train_run").set_value(run.key)
    at.number_input(key="train_gamma").set_value(gamma)
    at.checkbox(key="train_pos").uncheck()
    return _ok(at.run())


@pytest.mark.slow
def test_train_page_renders_runs_selection_adapters(run, adapter):
    at = _page_with_selection(run)
    assert any("**8** pairs selected of 24" in m.value for m in at.markdown)
    # every hyper-parameter is there with the paper's defaults
    values = {n.label: n.value for n in at.number_input}
    assert values["DPO β"] == 0.04 and values["Learning rate"] == 1e-4
    assert values["LoRA rank"] == 64 and values["LoRA alpha"] == 128 and values["Epochs"] == 1.0
    # the adapters table lists the trained adapter with its path and final metrics
    table = next(d.value for d in at.dataframe if "adapter" in d.value.columns)
    row = table[table["adapter"] == adapter.id].iloc[0]
    assert row["status"] == "done" and row["path"] == str(adapter.path) and row["steps"] == 3
    # curves + trajectory for the adapter
    at.selectbox(key="train_curve_adapter").set_value(adapter.id)
    _ok(at.run())
    assert not any("No checkpoint evaluation" in c.value for c in at.caption)
    # the effect meter: curves and the last read-out of the adapter (step 3)
    assert not any("No effect-meter read-out" in c.value for c in at.caption)
    meter = next(d.value for d in at.dataframe
                 if "gap closed (likelihood ratio)" in d.value.columns)
    last = adapter.meter()[-1]
    row = meter[meter["model"] == "LLS"].iloc[0]
    assert row["step"] == 3
    assert row["likelihood ratio (nats/token) [95% interval]"] == (
        f"{last['llr']:+.3f} [{last['llr_ci_low']:+.3f}, {last['llr_ci_high']:+.3f}]")
    gap = row["gap closed (likelihood ratio)"]  # a share, or why it is undefined
    if last.get("gap_closed_undefined"):
        assert gap.startswith("undefined")
    elif last.get("gap_closed") is not None:
        assert gap.startswith(f"{100 * last['gap_closed']:.0f}%")


@pytest.mark.slow
def test_contrastive_selection_on_the_train_page(run, bundled):
    import numpy as np

    from lls.scoring.contrastive import score_control
    from lls.scoring.selection import Ranking, SelectionConfig
    from test_training import _score_cfg

    model, tok = bundled
    control = score_control(_score_cfg(), model=model, tokenizer=tok)
    at = _ok(AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run())
    at.selectbox(key="train_run").set_value(run.key)
    at.number_input(key="train_gamma").set_value(0.5)
    _ok(at.run())
    adapter_caption = lambda: next(c.value for c in at.caption if "Adapter id" in c.value)  # noqa: E731
    plain_id = adapter_caption()
    at.checkbox(key="train_contrast").check()
    _ok(at.run())
    at.selectbox(key="train_control").set_value(control.key)
    _ok(at.run())
    t = run.frame().set_index("id")["w"]
    c = control.frame().set_index("id")["w"]
    diff = (t - c.reindex(t.index)).dropna().to_numpy()
    want = Ranking(np.asarray(diff)).count(SelectionConfig(gamma=0.5, positive_only=True))
    contrast = next(m.value for m in at.markdown if "pairs selected of" in m.value)
    assert f"**{want:,}** pairs selected" in contrast
    assert f"({int((diff > 0).sum()):,} with w > 0)" in contrast
    assert adapter_caption() != plain_id  # the recipe now records the control run


@pytest.mark.slow
def test_baseline_button_submits_a_cancellable_job(run, adapter):
    at = _page_with_selection(run)
    before = {j.id for j in jobs.list_jobs(kind="train")}
    next(b for b in at.button if b.label.startswith("Train its random twin")).click()
    _ok(at.run())
    new = [j for j in jobs.list_jobs(kind="train") if j.id not in before]
    assert len(new) == 1
    job = new[0]
    assert job.params["selection"] == "random" and job.params["baseline_of"]
    assert any("Submitted the random twin's job" in s.value for s in at.success)
    assert T.open_adapter(job.params["adapter_id"]).manifest["baseline_of"] == job.params["baseline_of"]
    jobs.cancel(job.id)
    assert jobs.wait(job.id, timeout=120).status == "cancelled"


@pytest.mark.slow
def test_train_button_submits_a_job_and_shows_its_curves(run, adapter):
    at = _page_with_selection(run, gamma=0.25)
    before = {j.id for j in jobs.list_jobs(kind="train")}
    next(b for b in at.button if b.label == "Train").click()
    _ok(at.run())
    new = [j for j in jobs.list_jobs(kind="train") if j.id not in before]
    assert len(new) == 1 and new[0].params["selection"] == "lls"
    new_id = new[0].params["adapter_id"]
    assert new_id != adapter.id
    # the curves section follows the adapter just submitted, not the one picked before
    assert at.selectbox(key="train_curve_adapter").value == new_id
    assert any(f"Submitted job {new[0].id}" in s.value for s in at.success)
    jobs.cancel(new[0].id)
    assert jobs.wait(new[0].id, timeout=120).status == "cancelled"
