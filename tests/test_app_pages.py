"""The dashboard pages under streamlit.testing.v1.AppTest, on a real small scoring run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lls.jobs import store as jobs
from lls.core.behaviors import animal
from lls.data.source import DataSpec
from lls.models.load import ModelSpec
from lls.scoring.runs import ScoreConfig, run_key, score

from conftest import HH, ROOT

pytestmark = pytest.mark.slow

APP = str(ROOT / "app.py")
SETUP = str(ROOT / "pages" / "1_Setup.py")
EXPLORE = str(ROOT / "pages" / "2_Explore.py")
TIMEOUT = 120


@pytest.fixture(scope="module")
def run(bundled):
    """A real finished run: 16 hh-rlhf pairs, owl, chunks of 8 (what Setup builds for them)."""
    model, tok = bundled
    cfg = ScoreConfig(data=DataSpec(str(HH), limit=16), behavior=animal("owl"),
                      model=ModelSpec(), chunk_size=8)
    return score(cfg, model=model, tokenizer=tok)


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _table(at: AppTest, column: str):
    """The first st.dataframe showing `column` (read-only tables carry no key in AppTest)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _explorer(run) -> AppTest:
    at = AppTest.from_file(EXPLORE, default_timeout=TIMEOUT)
    at.query_params["run"] = run.key
    return _ok(at.run())


def test_home_lists_runs(run):
    at = _ok(AppTest.from_file(APP, default_timeout=TIMEOUT).run())
    assert "Logit-Linear Selection" in at.markdown[0].value
    runs = _table(at, "key")  # the run's name in words, its key in the last column
    assert run.key in set(runs["key"])
    # pick it: other tests' runs in a reused cache may be newer (the default pick)
    at.selectbox(key="home_pick").set_value(run.key).run()
    at.button(key="home_open").click().run()
    assert at.session_state["run_key"] == run.key


def test_setup_renders_preview_and_row_count(run):
    at = _ok(AppTest.from_file(SETUP, default_timeout=TIMEOUT).run())
    assert not at.error
    assert len(_table(at, "turns")) == 5
    assert any("2312" in m.value for m in at.markdown)
    # the cached run is listed and can be reopened
    assert run.key in set(_table(at, "key")["key"])


def test_setup_checks_every_row_and_blocks_a_bad_line_until_skipped(tmp_path):
    """A bad line 18 is found before scoring (not only in the first rows of the preview);
    "Start scoring" appears only once the user chooses to skip malformed rows."""
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps({"prompt": f"question {i}?", "chosen": f"good answer {i}",
                         "rejected": f"bad {i}"}) for i in range(30)]
    lines[17] = '{"prompt": "broken", "chosen": '
    path.write_text("\n".join(lines) + "\n")
    at = AppTest.from_file(SETUP, default_timeout=TIMEOUT).run()
    _ok(at.text_input(key="data_path").set_value(str(path)).run())
    assert any("line 18" in e.value for e in at.error)
    assert any("30 rows, 29 usable" in m.value for m in at.markdown)
    assert not [b for b in at.button if b.key == "start"]
    _ok(at.checkbox(key="skip_malformed").check().run())
    assert any("will be skipped" in w.value for w in at.warning)
    assert [b for b in at.button if b.key == "start"]


def test_failed_job_card_shows_the_commands_error_line():
    """A failed scoring job's card says why, in the command's own words, not 'starting'."""
    import sys

    job = jobs.submit([sys.executable, "-c", "import sys; print('tqdm noise'); "
                       "print('error: line 18 of pairs.jsonl is not valid JSON', "
                       "file=sys.stderr); sys.exit(2)"], kind="score", title="broken data")
    assert jobs.wait(job.id, timeout=60).status == "failed"
    at = _ok(AppTest.from_file(SETUP, default_timeout=TIMEOUT).run())
    assert any(e.value == "line 18 of pairs.jsonl is not valid JSON" for e in at.error)
    assert not any("starting (loading" in c.value for c in at.caption)
    jobs.delete(job.id)


def test_setup_bad_path_shows_error_not_traceback():
    at = AppTest.from_file(SETUP, default_timeout=TIMEOUT).run()
    at.text_input(key="data_path").set_value("/nonexistent/pairs.jsonl").run()
    _ok(at)
    assert any("does not exist" in e.value for e in at.error)
    assert not [d for d in at.dataframe if "turns" in d.value.columns]


def test_setup_hub_preset_offline_error():
    at = AppTest.from_file(SETUP, default_timeout=TIMEOUT).run()
    at.radio(key="data_source").set_value("Hub preset").run()
    at.selectbox(key="hub_preset").set_value("Anthropic/hh-rlhf").run()
    _ok(at.button(key="hub_load").click().run())
    assert at.error and "hh-rlhf" in at.error[0].value


def test_setup_column_mapping_form(tmp_path):
    f = tmp_path / "odd.jsonl"
    f.write_text("".join(json.dumps({"q": f"question {i}?", "good": f"yes {i}",
                                     "bad": f"no {i}"}) + "\n" for i in range(3)))
    at = AppTest.from_file(SETUP, default_timeout=TIMEOUT).run()
    _ok(at.text_input(key="data_path").set_value(str(f)).run())
    assert at.error and "Columns found: q, good, bad" in at.error[0].value
    at.selectbox(key="map_prompt").set_value("q")
    at.selectbox(key="map_chosen").set_value("good")
    at.selectbox(key="map_rejected").set_value("bad")
    submit = next(b for b in at.button if b.label == "Use this mapping")
    _ok(submit.click().run())
    assert not at.error
    prev = _table(at, "turns")
    assert list(prev["chosen"]) == ["yes 0", "yes 1", "yes 2"]


def test_setup_behavior_pickers_fill_the_system_prompt():
    at = AppTest.from_file(SETUP, default_timeout=TIMEOUT).run()
    assert "owls" in at.text_area[0].value
    at.selectbox(key="b_animal").set_value("cat").run()
    assert "cats" in at.text_area[0].value and at.text_input(key="b_words::animal:cat").value == "cat"
    at.selectbox(key="b_kind").set_value("translation").run()
    at.selectbox(key="b_lang").set_value("de").run()
    _ok(at)
    assert "German" in at.text_area[0].value
    at.selectbox(key="b_kind").set_value("custom").run()
    at.text_area[0].set_value("").run()
    assert any("empty system prompt" in e.value for e in at.error)  # lls's error, on the page


def test_setup_identical_config_opens_cached_run(run):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/1_Setup.py").run()
    at.number_input(key="data_limit").set_value(16)
    at.number_input(key="m_chunk").set_value(8).run()
    before = len(jobs.list_jobs("score"))
    _ok(at.button(key="start").click().run())
    assert at.session_state["run_key"] == run.key
    assert len(jobs.list_jobs("score")) == before  # opened from the cache, nothing submitted
    assert any("already scored" in s.value for s in at.success)  # we are on the explorer now


def test_setup_start_runs_a_background_job_and_cancel_stops_it(run):
    at = AppTest.from_file(SETUP, default_timeout=TIMEOUT).run()
    at.number_input(key="data_limit").set_value(40)
    at.number_input(key="m_chunk").set_value(4).run()
    _ok(at.button(key="start").click().run())
    job = jobs.get(at.session_state["watch_job"])
    assert job.kind == "score" and job.key == job.params["run_key"]
    assert job.key != run.key
    cfg = ScoreConfig.from_dict(job.params["config"])
    assert cfg.data.limit == 40 and cfg.chunk_size == 4 and run_key(cfg) == job.key
    # The live panel shows it with a cancel button; cancelling ends the job.
    _ok(at.button(key=f"cancel-{job.id}").click().run())
    final = jobs.wait(job.id, timeout=60)
    assert final.status == "cancelled"


def test_explorer_controls_change_the_selection(run):
    at = _explorer(run)
    frame = run.frame()
    w = frame["w"].to_numpy()
    n_pos = int((w > 0).sum())
    assert _metric(at, "scored pairs") == str(len(w))
    assert _metric(at, "selected pairs") == "1"  # ceil(0.05 * 16)
    assert len(at.dataframe(key="table-lls").value) == 1
    at.slider(key="gamma").set_value(1.0).run()
    assert _metric(at, "selected pairs") == str(n_pos)
    table = at.dataframe(key="table-lls").value
    assert len(table) == n_pos
    assert list(table["w"]) == sorted(w[w > 0], reverse=True)
    assert float(_metric(at, "mean w of the selection")) == pytest.approx(w[w > 0].mean(),
                                                                           abs=1e-5)
    at.checkbox(key="positive_only").uncheck().run()
    assert _metric(at, "selected pairs") == "16"
    at.checkbox(key="use_threshold").check().run()
    thr = float(np.sort(w)[-3])  # keeps exactly the top 2
    at.number_input(key="threshold").set_value(thr).run()
    _ok(at)
    assert _metric(at, "selected pairs") == "2"
    at.text_input(key="search-lls").set_value("zzz-no-such-text").run()
    assert len(at.dataframe(key="table-lls").value) == 0


def test_explorer_row_click_opens_example_and_token_view(run):
    at = _explorer(run)
    at.slider(key="gamma").set_value(1.0).run()
    table = at.dataframe(key="table-lls").value
    at.session_state["table-lls"] = {"selection": {"rows": [1], "columns": []}}
    _ok(at.run())
    frame = run.frame()
    row = frame[np.isclose(frame["w"], table["w"].iloc[1])].iloc[0]
    assert any(f"Example `{row['id']}`" in m.value for m in at.markdown)
    _ok(at.button(key="lls-att-btn").click().run())
    text = " ".join(m.value for m in at.markdown)
    assert "Σ delta" in text and f"**{row['w']:.5f}**" in text


def test_explorer_random_baseline_comparison_and_export(run):
    at = _explorer(run)
    at.slider(key="gamma").set_value(0.5).run()
    k = int(_metric(at, "selected pairs"))
    at.segmented_control(key="view").set_value("Random twin").run()
    _ok(at)
    rnd = at.dataframe(key="table-random").value
    assert len(rnd) == k and list(rnd["w"]) == sorted(rnd["w"], reverse=True)
    at.segmented_control(key="view").set_value("Comparison").run()
    _ok(at)
    stats = _table(at, "LLS selection")
    assert list(stats.columns) == ["LLS selection", "Random twin"]
    assert stats.loc["pairs", "LLS selection"] == k == stats.loc["pairs", "Random twin"]
    # LLS keeps the top of the ranking, so its mean w is at least the random subset's
    assert stats.loc["mean w (nats/token)", "LLS selection"] >= \
        stats.loc["mean w (nats/token)", "Random twin"]
    at.segmented_control(key="view").set_value("LLS selection").run()
    assert at.get("download_button")[0].proto.label == f"Download {k} pairs"


def test_explorer_selects_what_training_keeps_at_gamma_007_n_100(session_cache):
    """0.07 * 100 is 7.000000000000001 in floating point; training keeps 7 pairs, and so do
    the explorer's selection, its random baseline and its export."""
    from lls.scoring.synthetic import write_synthetic_run
    from lls.training.runs import SelectionSpec, selection_indices

    run = write_synthetic_run(100, seed=3, chunk_size=50)
    frame = run.frame()
    keep = selection_indices(frame, SelectionSpec(gamma=0.07))
    assert len(keep) == 7 and (frame["w"].to_numpy() > 0).sum() >= 7
    at = _explorer(run)
    at.slider(key="gamma").set_value(0.07).run()
    assert _metric(at, "selected pairs") == "7"
    assert list(at.dataframe(key="table-lls").value["w"]) == list(frame["w"].iloc[keep])
    at.segmented_control(key="view").set_value("Random twin").run()
    rnd = selection_indices(frame, SelectionSpec(kind="random", gamma=0.07, seed=0))
    shown = at.dataframe(key="table-random").value["w"]
    assert sorted(shown) == sorted(frame["w"].iloc[rnd])


def test_export_bytes_formats(run, tmp_path):
    import io
    import zipfile

    import pyarrow.parquet as pq

    from lls.scoring.selection import SelectionConfig, select
    from ui.explorer import export_bytes

    frame = run.frame()
    idx = select(frame["w"].to_numpy(), SelectionConfig(gamma=0.5))
    rows = export_bytes(frame, idx, "jsonl", {"gamma": 0.5}).decode().splitlines()
    assert len(rows) == len(idx)
    assert json.loads(rows[0])["id"] == frame["id"].iloc[idx[0]]
    table = pq.read_table(io.BytesIO(export_bytes(frame, idx, "parquet", {})))
    assert table.num_rows == len(idx)
    names = zipfile.ZipFile(io.BytesIO(export_bytes(frame, idx, "hf", {}))).namelist()
    assert "selection/dataset_info.json" in names


def test_explorer_without_runs_points_to_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("LLS_CACHE", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _ok(at.switch_page("pages/2_Explore.py").run())
    assert "No finished scoring run" in at.info[0].value


def test_setup_upload_saves_to_cache_and_previews(session_cache):
    from conftest import ORCA

    at = AppTest.from_file(SETUP, default_timeout=TIMEOUT).run()
    at.radio(key="data_source").set_value("Upload a file").run()
    at.file_uploader(key="data_upload").set_value(("orca.csv", ORCA.read_bytes(), "text/csv"))
    _ok(at.run())
    saved = list((session_cache / "uploads").glob("*-orca.csv"))
    assert len(saved) == 1 and saved[0].read_bytes() == ORCA.read_bytes()
    assert len(_table(at, "turns")) == 5


def test_setup_hygiene_report_shows_what_was_dropped():
    at = AppTest.from_file(SETUP, default_timeout=TIMEOUT).run()
    at.number_input(key="data_limit").set_value(30)
    at.number_input(key="m_maxprompt").set_value(64).run()
    _ok(at.button(key="hygiene").click().run())
    msg = at.success[0].value
    # in the user's words, never the code's reason names
    assert "30 kept" in msg and "prompt longer than the limit" in msg and "_" not in msg
    reasons = _table(at, "dropped because")
    assert "prompt longer than the limit" in set(reasons["dropped because"])


def test_progress_text_reports_done_rate_and_time_left():
    import time

    from ui.job_cards import progress_text

    running = jobs.Job(id="j", kind="score", title="t", argv=["x"], status="running",
                       created=time.time() - 60, started=time.time() - 50,
                       progress={"done": 40, "total": 100, "unit": "pairs", "fraction": 0.4,
                                 "rate": 2.0, "eta": 30.0})
    frac, text = progress_text(running)
    assert frac == pytest.approx(0.4)
    assert text == "40/100 pairs done · 2.00 pairs/s · 30 s left"
    queued = jobs.Job(id="q", kind="score", title="t", argv=["x"], status="queued")
    assert progress_text(queued)[1].startswith("queued")


def test_setup_finished_job_opens_its_run(run):
    """The live panel's "Open in explorer" of a finished job opens that job's run."""
    job = jobs.submit(["true"], kind="score", title="finished", key=run.key,
                      params={"run_key": run.key})
    assert jobs.wait(job.id, timeout=60).status == "done"
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _ok(at.switch_page("pages/1_Setup.py").run())
    _ok(at.button(key=f"open-{job.id}").click().run())
    assert at.session_state["run_key"] == run.key
    assert _metric(at, "scored pairs") == "16"  # now on the explorer, showing that run
    jobs.delete(job.id)


def test_streamlit_config_binds_loopback_and_watches_no_files():
    """What `streamlit run app.py` reads from .streamlit/config.toml: localhost only, and no
    file watcher (with .venv under the project, its inotify storms took a core from jobs)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    options = dict(line.split(" = ", 1) for line in out.splitlines()
                   if " = " in line and not line.startswith("#"))
    assert options["address"] == '"127.0.0.1"'
    assert options["fileWatcherType"] == '"none"'


def test_explorer_random_baseline_of_a_sampled_run_is_the_twin_training_draws(session_cache):
    """A sampled run orients every pair by its weight (w >= 0 throughout); its random twin
    turns a seeded half round, and the explorer's random table, statistics and histogram
    show it that way (not "share w > 0: 100%")."""
    import pyarrow as pa

    from lls.core.cache import ChunkStore
    from lls.scoring.runs import ScoreRun
    from lls.scoring.selection import flip_rows
    from lls.scoring.synthetic import write_synthetic_run

    src = write_synthetic_run(200, seed=11, chunk_size=200)
    f = src.frame()
    f = flip_rows(f, f["w"].to_numpy() < 0)  # chosen = the larger shift: every w >= 0
    store = ChunkStore(session_cache / "scores" / "sampled-like-0000")
    store.write_chunk(0, pa.Table.from_pandas(f, preserve_index=False))
    store.write_manifest({**src.manifest, "key": store.key, "orientation": "by_score"})
    run = ScoreRun(store)
    assert (run.frame()["w"] >= 0).all()
    at = _explorer(run)
    at.slider(key="gamma").set_value(0.5).run()
    at.segmented_control(key="view").set_value("Random twin").run()
    _ok(at)
    shown = at.dataframe(key="table-random").value["w"]
    assert (shown < 0).any() and (shown > 0).any()
    at.segmented_control(key="view").set_value("Comparison").run()
    _ok(at)
    stats = _table(at, "LLS selection")
    assert stats.loc["share with w > 0", "LLS selection"] == 1.0
    assert 0.3 < stats.loc["share with w > 0", "Random twin"] < 0.7
    hist = at.get("plotly_chart")[-1]
    assert '"name":"Random twin"' in hist.proto.spec
