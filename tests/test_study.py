"""Studies (lls.studies.study, lls.evaluation.effects): a small grid on a tiny random model, run for real.

Every cell trains an LLS adapter and its same-size random twin with TRL in child processes,
reads the effect meter at each checkpoint and samples one-word answers, so the module takes a
couple of minutes; it is marked slow.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lls.evaluation import effects
from lls.studies import study as S
from lls.studies.runner import run_study, submit_cells
from lls.studies.store import teacher_name

pytestmark = pytest.mark.slow

RECIPE = {"batch_size": 2, "max_length": 64, "meter_k": 2, "meter_questions": 3,
          "eval_at_checkpoints": False}
SAMPLED = {"questions": 2, "samples": 2, "max_new_tokens": 3, "seed": 0}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, session_cache):
    """A finished owl scoring run of 24 synthetic pairs by a tiny random Llama."""
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.models.load import ModelSpec
    from lls.scoring.runs import ScoreConfig, score
    from lls.scoring.synthetic import synthetic_pairs_file, tiny_model_dir

    d = tmp_path_factory.mktemp("tiny")
    # in the session cache, not a temp dir: the cached run records the model's path
    model = tiny_model_dir(session_cache / "tiny-model")
    data = synthetic_pairs_file(d / "pairs.jsonl", 24)
    cfg = ScoreConfig(DataSpec(str(data)), animal("owl"), model=ModelSpec(str(model)),
                      truncation=8, chunk_size=8)
    return score(cfg)


def _config(run, name, **grid):
    return S.StudyConfig(name=name, run=run.key, grid=grid, recipe=RECIPE, sampled=SAMPLED)


# ----------------------------------------------------------------------------- pure parts

def test_collapse_flags_one_dominant_answer_not_a_spread():
    base = {"cat": 0.4, "dog": 0.3, "owl": 0.1, "other": 0.2}
    collapsed = effects.collapse({"lion": 0.95, "cat": 0.05}, base)
    assert collapsed["collapsed"] and collapsed["top"] == "lion"
    assert collapsed["entropy"] < 0.5 * collapsed["base_entropy"]
    spread = effects.collapse({"cat": 0.35, "owl": 0.3, "dog": 0.2, "other": 0.15}, base)
    assert not spread["collapsed"]
    assert effects.entropy([0.5, 0.5]) == pytest.approx(math.log(2))


def test_best_step_needs_the_lls_adapter_itself_to_move_toward_the_target():
    def row(step, lls, rnd):
        return {"step": step, "lls_margin": lls, "random_margin": rnd,
                "margin": {"diff": lls - rnd, "ci_low": 0, "ci_high": 0}}
    curve = [row(0, -4.0, -4.0), row(8, -3.0, -4.5), row(16, -5.0, -8.0)]
    # step 16 has the largest paired effect (+3) but both adapters moved away from the owl
    best = effects.best_step(curve, "margin", effects.base_row(curve))
    assert best["step"] == 8 and best["lls_moved"]
    assert effects.best_step(curve, "margin")["step"] == 16  # without a base: effect only
    # no step where the LLS adapter moved: the largest effect, marked as not moved
    away = effects.best_step(curve[:1] + [row(8, -4.5, -6.0), row(16, -4.2, -4.4)], "margin",
                             effects.base_row(curve))
    assert away["step"] == 8 and away["lls_moved"] is False


def test_sampled_collapse_leaves_out_answers_that_name_no_candidate():
    base = {"other": 0.9, "cat": 0.05, "dog": 0.05}
    # 98% "other": the model rarely names an animal at all; that is not a collapse
    vague = effects.sampled_collapse({"other": 0.98, "cat": 0.02}, base, 256)
    assert not vague["collapsed"] and not vague["assessable"]
    assert "5 of 256" in vague["reason"]
    # every answer that names an animal names the lion: collapsed, over the named answers
    lion = effects.sampled_collapse({"other": 0.5, "lion": 0.48, "cat": 0.02}, base, 256)
    assert lion["assessable"] and lion["collapsed"] and lion["top"] == "lion"
    assert lion["top_share"] == pytest.approx(0.96)


def test_classify_names_the_first_candidate():
    from lls.evaluation.probe import classify as one
    from lls.core.prompts import PROBE_CANDIDATES

    def classify(text):  # the one-word read-out's rule: first named anywhere, else other
        return one(text, PROBE_CANDIDATES) or "other"

    assert classify("Owls!") == "owl"
    assert classify("A dog, or maybe a cat") == "dog"
    assert classify("Penguin") == "other"


def test_cells_order_paper_first_and_ids_are_settings():
    cfg = S.StudyConfig.__new__(S.StudyConfig)  # no run needed for the grid logic
    object.__setattr__(cfg, "name", "x")
    cfg = S.StudyConfig(name="x", run="r", grid={"gamma": [0.2, 0.05], "epochs": [3, 1]})
    cells = S.cells(cfg)
    assert len(cells) == 4
    assert cells[0].s["gamma"] == 0.05 and cells[0].s["epochs"] == 1.0  # the paper recipe
    assert cells[-1].distance() == 2
    # epochs share a training group under the constant schedule, not under a decaying one
    assert cells[0].group(cfg) == [c for c in cells if c.s["gamma"] == 0.05][1].group(cfg)
    lin = S.StudyConfig(name="x", run="r", grid={"epochs": [1, 3]}, lr_scheduler="linear")
    a, b = S.cells(lin)
    assert a.group(lin) != b.group(lin)
    with pytest.raises(S.StudyError, match="Unknown grid axis"):
        S.StudyConfig(name="x", run="r", grid={"gama": [0.1]})
    with pytest.raises(S.StudyError, match="control run"):
        S.StudyConfig(name="x", run="r", grid={"ranking": ["contrastive"]})


# ----------------------------------------------------------------------------- real runs

def test_study_runs_resumes_after_kill_and_reuses_cells_when_extended(tiny_run, tmp_path,
                                                                      capsys):
    name = "tiny-grid"
    S.create_study(_config(tiny_run, name, gamma=[0.25], epochs=[1, 2]))
    cmd = [sys.executable, "-m", "lls", "study", "run", name]
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    study = S.open_study(name)
    lls_id, _ = S.adapter_ids(study, study.cells()[0])
    deadline = time.time() + 300
    from lls.training.adapters import open_adapter
    while time.time() < deadline:  # kill the worker once the first adapter has trained
        try:
            if open_adapter(lls_id).manifest.get("status") == "done":
                break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        if proc.poll() is not None:
            pytest.fail("the study worker exited early:\n" + (tmp_path / "worker.log").read_text())
        time.sleep(0.5)
    else:
        pytest.fail("the first adapter did not finish in 300 s")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_created = open_adapter(lls_id).manifest["created"]

    run_study(name)  # resumes: the finished adapter is reused, the rest trains
    study = S.open_study(name)
    rows = S.table(study)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert open_adapter(lls_id).manifest["created"] == first_created
    # both epoch cells read one training run: epoch 1 at half its steps
    r1, r2 = (study.result(c) for c in study.cells())
    assert r1["adapters"] == r2["adapters"] and r1["step"] * 2 == r2["step"]

    # paired differences equal the per-adapter read-outs at the same step
    for row in r2["curve"]:
        assert row["margin"]["diff"] == pytest.approx(row["lls_margin"] - row["random_margin"])
        if row.get("lls_gap_closed") is not None and (row.get("gap_closed") or {}).get(
                "diff") is not None:  # undefined when the span's interval includes 0
            assert row["gap_closed"]["diff"] == pytest.approx(
                row["lls_gap_closed"] - row["random_gap_closed"], abs=1e-9)
    samp = r2["sampled"]["final"]["kinds"]["one-word"]
    assert samp["lls"]["n"] == SAMPLED["questions"] * SAMPLED["samples"]
    assert samp["lls"]["n_per_question"] == [SAMPLED["samples"]] * SAMPLED["questions"]
    assert sum(samp["lls"]["per_question"]) == samp["lls"]["k"]
    assert "collapse" in samp["lls"] and r2["sampled_levels"]["one-word"]["system"]["n"] == 4
    cost = r2["cost"]  # the breakdown: training, meter read-outs, sampled read-outs
    assert cost["training"] > 0 and cost["meter"] > 0 and cost["sampled"] > 0
    assert cost["total"] == pytest.approx(cost["training"] + cost["meter"] + cost["sampled"],
                                          abs=0.2)
    assert r2["memory"]["peak_rss_mb"] > 0
    from lls.cli import main  # status prints the floor and the ceiling beside the cells
    capsys.readouterr()
    assert main(["study", "status", name]) == 0
    lv = r2["sampled_levels"]["one-word"]["system"]
    assert (f"sampled one-word answers: base {r2['sampled_levels']['one-word']['base']['k']}/4"
            in (out := capsys.readouterr().out)) and f"teacher {teacher_name(tiny_run)} " \
        f"{lv['k']}/{lv['n']}" in out

    mtimes = {c.id(study.config): study.result_path(c).stat().st_mtime for c in study.cells()}
    S.create_study(_config(tiny_run, name, gamma=[0.5]))  # extend the grid
    study = S.open_study(name)
    assert len(study.cells()) == 4
    run_study(name)
    for c in S.open_study(name).cells():
        cid = c.id(study.config)
        if cid in mtimes:
            assert study.result_path(c).stat().st_mtime == mtimes[cid]  # reused, not redone
        assert study.result(c) is not None
    best = S.best_cell(study)
    # gamma 0.25 (epochs 1 and 2: one run) and 0.5 (its own), checkpoints after step 0
    want = len({(r["adapters"]["lls"], row["step"]) for r in
                (study.result(c) for c in study.cells()) for row in r["curve"] if row["step"]})
    assert best is not None and best["n_compared"] == want and f"Best of {want}" in best["caveat"]
    got = S.confirm_best(name)
    assert got["queued"] and got["settings"]["seed"] == 1 and got["judge_step"] == best["step"]
    assert not S.confirm_best(name)["queued"]  # one pending confirmation at a time
    conf = S.open_study(name).cells()[0]
    assert conf.confirms == best["cell"] and conf.s["seed"] == 1


def _processes_with(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and text in (d / "cmdline").read_bytes().decode(errors="replace"):
                out.append(int(d.name))
        except OSError:
            pass
    return out


def test_stopping_the_study_stops_its_training_child(tiny_run, tmp_path):
    name = "tiny-stop"
    # a seed no other test trains: its adapters are not in the session cache yet, so the
    # study has a training child to stop whatever ran before
    S.create_study(_config(tiny_run, name, gamma=[0.25], epochs=[1], seed=[7]))
    study = S.open_study(name)
    lls_id, _ = S.adapter_ids(study, study.cells()[0])
    from lls.core.errors import LLSError
    from lls.training.adapters import open_adapter
    with pytest.raises(LLSError):
        open_adapter(lls_id)
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "lls", "study", "run", name],
                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not _processes_with(lls_id):  # the training child has started
            assert proc.poll() is None and time.time() < deadline, \
                (tmp_path / "worker.log").read_text()
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)  # the study process only, as `kill PID` does
        proc.wait(timeout=120)
        deadline = time.time() + 90
        while _processes_with(lls_id) and time.time() < deadline:
            time.sleep(0.5)
        assert not _processes_with(lls_id), "the training child outlived its study"
        try:  # stopped by the study's signal (before or while training), not left to finish
            status = open_adapter(lls_id).manifest["status"]
        except LLSError:
            status = "never created"
        assert status in {"cancelled", "never created"}, status
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_queue_answers_trained_epoch_siblings_before_training_the_next_group(tiny_run,
                                                                             monkeypatch):
    import lls.studies.runner as R

    name = "tiny-order"
    S.create_study(_config(tiny_run, name, gamma=[0.25, 0.5], epochs=[1, 2]))
    assert [(c.s["gamma"], c.s["epochs"]) for c in S.open_study(name).cells()][:2] == \
        [(0.25, 1.0), (0.5, 1.0)]  # queue order: nearest to the paper recipe first
    order, trained_groups = [], set()

    def fake_run_cell(study, cell, sampler, log):  # training a cell trains its whole group
        order.append((cell.s["gamma"], cell.s["epochs"]))
        trained_groups.add(cell.s["gamma"])
        return {"memory": {"peak_rss_mb": 1.0}}
    monkeypatch.setattr(R, "run_cell", fake_run_cell)
    monkeypatch.setattr(R, "trained", lambda study, cell: cell.s["gamma"] in trained_groups)
    R.run_study(name)
    # the 2-epoch sibling reads the run just trained: it comes before the next group
    assert order == [(0.25, 1.0), (0.25, 2.0), (0.5, 1.0), (0.5, 2.0)]


def test_empty_selection_is_a_clear_error_every_time_it_is_asked(tiny_run):
    study = S.create_study(_config(tiny_run, "tiny-empty", threshold=[1e9]))
    cell = study.cells()[0]
    for _ in range(2):  # the second answer comes from the memoised selection size
        with pytest.raises(S.StudyError, match="is empty"):
            S.steps_per_epoch(study, cell.s)


def test_submitit_local_executor_runs_a_cell(tiny_run, tmp_path):
    submitit = pytest.importorskip("submitit")
    name = "tiny-submitit"
    S.create_study(_config(tiny_run, name, gamma=[0.25], seed=[3]))
    ex = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    ex.update_parameters(timeout_min=20)
    jobs_ = submit_cells(name, ex)
    assert len(jobs_) == 1
    res = jobs_[0].result()
    assert res[0]["settings"]["seed"] == 3
    study = S.open_study(name)
    assert study.result(study.cells()[0])["cell"] == res[0]["cell"]


def test_cli_study_create_status_and_errors(tiny_run, capsys):
    from lls.cli import main

    assert main(["study", "create", "cli-grid", "--run", tiny_run.key[:10], "--gamma",
                 "0.25,0.5", "--recipe", json.dumps(RECIPE)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cells"] == 2
    assert main(["study", "status", "cli-grid"]) == 0
    assert "queued" in capsys.readouterr().out
    assert main(["study", "status", "cli-grid", "--markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| Cell | Status | Pairs | Step | LLS − random, margin (nats) |")
    table_ = [line for line in md if line.startswith("|")]
    assert len(table_) == 4  # header, rule, 2 cells
    assert all(" | queued | " in line for line in table_[2:])
    assert "No finished cell yet." in md[-1] and any("bootstrap" in line for line in md)
    assert main(["study", "create", "bad name!", "--run", tiny_run.key]) == 2
    assert "Study name" in capsys.readouterr().err
    assert main(["study", "status", "nope"]) == 2
    assert "No study named 'nope'" in capsys.readouterr().err


def test_studies_page_shows_cells_best_and_opens_chat(tiny_run):
    """The Studies page over a finished study: the cells table, the effect figure, the best
    cell with its caveat, and "Open in Chat" handing the checkpoint and its twin over."""
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    name = "tiny-page"
    S.create_study(_config(tiny_run, name, gamma=[0.25]))
    run_study(name)
    row = S.table(S.open_study(name))[0]
    k_lls, k_rnd = row["one-word:lls_k"], row["one-word:random_k"]
    assert k_lls == round(row["one-word:lls_share"] * row["one-word:lls_n"])
    assert row["one-word:diff"] == pytest.approx((k_lls - k_rnd) / row["one-word:lls_n"])
    assert row["one-word:lo"] <= row["one-word:diff"] <= row["one-word:hi"]
    at = AppTest.from_file(str(ROOT / "pages" / "7_Studies.py"), default_timeout=120)
    at.session_state["study_pick"] = name
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    cells = next(d.value for d in at.dataframe if "Status" in d.value.columns)
    assert list(cells["Status"]) == ["done"]
    assert not any(c.startswith(("margin_", "lls_", "gap_")) for c in cells.columns)
    assert (cells["Error"] == "").all()  # never "None"
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "owl" in text and "pairs" in text  # what the study targets
    assert "bootstrap" in text  # the method beside the intervals
    study = S.open_study(name)
    best = S.best_cell(study)
    n = best["correction"]["n"]
    assert f"Bonferroni over N = {n} candidates" in text or \
        any(f"Bonferroni over N = {n} candidates" in i.value for i in at.info)
    if best["state"] in ("beats", "confirmed", "candidate"):
        if best["beats_twin"]:
            assert any("Best of" in w.value for w in at.warning)
        else:  # a candidate: named as one, with the way to a verdict
            assert any("Candidate cell" in h.value for h in at.subheader)
            assert any("confirmation" in i.value for i in at.info)
        at.button(key="study_chat").click().run()
        want = S.chat_setup(study, best)
        assert at.session_state["chat_preset"] == want or not at.exception
    else:  # a tiny random model: no cell beats its twin, and the page says so plainly
        assert any("No cell beat its random twin" in i.value for i in at.info)
        assert not any("Best cell" in h.value for h in at.subheader)
        assert "study_confirm" not in [b.key for b in at.button]
    want = S.chat_setup(study, best)
    assert len(want["adapters"]) == 2 and all(Path(p).is_dir() for p in want["adapters"])
    assert want["prompts"][0].startswith("Name your favourite animal")
    assert want["labels"][0].startswith("LLS · ") and "step" in want["labels"][0]


def test_sampler_removes_each_adapter_and_the_queue_releases_the_model(tiny_run, monkeypatch):
    """The study process stays flat: a checkpoint's LoRA layers go after its read-out, the
    base model is dropped before children train; peak RSS per cell is printed."""
    import lls.studies.runner as R
    from lls.studies.store import checkpoint_dir
    from lls.training.adapters import open_adapter

    name = "tiny-mem"
    S.create_study(_config(tiny_run, name, gamma=[0.25], epochs=[1, 2]))
    run_study(name)
    study = S.open_study(name)
    res = study.result(study.cells()[-1])
    sampler = R._Sampler(study, study.behavior())
    path = checkpoint_dir(open_adapter(res["adapters"]["lls"]).path, res["step"])
    first = sampler("one-word", path)
    for _ in range(3):
        again = sampler("one-word", path)
        assert again["per_question"] == first["per_question"]  # the same adapter each time
    names = [n for n, _ in sampler.model.named_modules()]
    assert not any("lora" in n.lower() for n in names)  # every adapter was removed
    assert sampler("one-word", None)["per_question"] == \
        res["sampled_levels"]["one-word"]["base"]["per_question"]  # the base as it was
    sampler.release()
    assert sampler.model is None

    releases = []
    monkeypatch.setattr(R._Sampler, "release", lambda self: releases.append(1))
    monkeypatch.setattr(R, "run_cell", lambda *a, **k: {"memory": {"peak_rss_mb": 1.0}})
    S.create_study(_config(tiny_run, name, gamma=[0.75]))  # a group nobody trained yet
    R.run_study(name)
    assert releases  # a cell that still had to train ran with no model in the parent


def test_pairs_axis_keeps_the_top_n_by_weight(tiny_run):
    from lls.studies import plan

    study = S.create_study(_config(tiny_run, "tiny-pairs", pairs=[3, 7]))
    sizes = sorted(plan.selection_size(study, c.s) for c in study.cells())
    assert sizes == [3, 7]
    assert [plan.selection_size(study, c.s, "random") for c in study.cells()] == \
        [plan.selection_size(study, c.s) for c in study.cells()]  # the twin: the same N
    with pytest.raises(S.StudyError, match="only 24 pairs"):
        plan.selection(study, {**study.cells()[0].s, "pairs": 99})


def test_extending_keeps_the_stored_recipe_and_refuses_a_changed_one(tiny_run, capsys):
    from lls.cli import main

    S.create_study(_config(tiny_run, "tiny-extend", gamma=[0.25]))
    # the CLI extends a study without repeating the recipe: the stored one is used
    assert main(["study", "create", "tiny-extend", "--run", tiny_run.key, "--gamma", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cells"] == 2 and out["recipe"]["batch_size"] == RECIPE["batch_size"]
    with pytest.raises(S.StudyError, match="batch_size: stored 2, given 4"):
        S.create_study(S.StudyConfig(name="tiny-extend", run=tiny_run.key,
                                     recipe={**RECIPE, "batch_size": 4}, sampled=SAMPLED))
    with pytest.raises(S.StudyError, match="checkpoints_per_epoch"):
        S.create_study(S.StudyConfig(name="tiny-extend", run=tiny_run.key,
                                     checkpoints_per_epoch=1))


def test_a_version_1_study_is_upgraded_and_its_cells_read_again(tiny_run):
    from lls.core.cache import atomic_write_json

    path = S.studies_root() / "tiny-v1"
    atomic_write_json(path / "study.json", {"version": "1", "config": {
        "name": "tiny-v1", "run": tiny_run.key, "grid": {"gamma": [0.25]}, "recipe": RECIPE,
        "sampled": {**SAMPLED}, "checkpoints_per_epoch": 2}, "extra": [{"gamma": 0.25,
                                                                         "seed": 1}]})
    atomic_write_json(path / "cells" / "oldcell00000.json", {"cell": "oldcell00000"})
    study = S.open_study("tiny-v1")
    assert study.upgraded_from == "1" and [c.s["seed"] for c in study.cells()] == [1, 0]
    assert not any(c.confirms for c in study.cells())  # a v1 extra cell, judged as then
    assert [S.cell_status(study, c) for c in study.cells()] == ["queued", "queued"]
    assert study.config.sampled["max_new_tokens"] == {"one-word": SAMPLED["max_new_tokens"]}


def test_max_prompt_length_counts_before_training(tiny_run):
    from lls.models.load import ModelSpec, load_tokenizer
    from lls.studies import plan

    study = S.create_study(_config(tiny_run, "tiny-maxlen-all", gamma=[0.5]))
    tok = load_tokenizer(ModelSpec.from_dict(tiny_run.manifest["config"]["model"]))
    from lls.training.dpo import build_rows

    cfg = S.group_config(study, study.cells()[0])
    rows = build_rows(tiny_run.frame(), cfg, with_ref=False)
    lengths = sorted(len(tok.apply_chat_template(r["prompt"], tokenize=True,
                                                 add_generation_prompt=True,
                                                 return_dict=True)["input_ids"]) for r in rows)
    limit = lengths[len(lengths) // 2]  # keeps about half of the selection
    study = S.create_study(S.StudyConfig(name="tiny-maxlen", run=tiny_run.key,
                                         grid={"gamma": [0.5]},
                                         recipe={**RECIPE, "max_prompt_length": limit},
                                         sampled=SAMPLED))
    cell = study.cells()[0]
    kept = plan.selection_size(study, cell.s)
    assert kept == sum(1 for n in lengths if n <= limit) < len(rows)
    try:
        spe = S.steps_per_epoch(study, cell.s)
        assert spe == math.ceil(kept / RECIPE["batch_size"])
    except S.StudyError as e:  # the twin keeps another number: said before training
        assert "random twin" in str(e)


def test_a_teacher_axis_trains_each_teachers_selection_beside_its_own_ceiling(tiny_run,
                                                                            tmp_path):
    """A study over two teachers of the same pairs (the run's prompt and a LoRA adapter):
    each teacher's cells train on its own run, its sampled ceiling is read with that
    teacher, cells are named by teacher, and a run of other pairs is refused."""
    import json as _json

    from conftest import make_adapter
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.models.load import ModelSpec, load_model
    from lls.models.teacher import Teacher
    from lls.scoring.runs import ScoreConfig, score
    from lls.scoring.synthetic import synthetic_pairs_file

    cfg = tiny_run.config
    model, _ = load_model(cfg.model)
    adapter = make_adapter(model, tmp_path / "trait", seed=5)
    other = score(ScoreConfig(**{**cfg.__dict__, "teacher": Teacher("adapter", str(adapter))}))
    assert other.key != tiny_run.key
    study = S.create_study(S.StudyConfig(name="teachers", run=tiny_run.key,
                                       grid={"teacher": [tiny_run.key[:10], other.key[:10]],
                                             "gamma": [0.5]}, recipe=RECIPE, sampled=SAMPLED))
    assert study.config.grid["teacher"] == [None, other.key]
    assert study.config.teacher_names[other.key].startswith("adapter")
    cells = study.cells()
    assert len(cells) == 2 and {c.run(study.config) for c in cells} == {tiny_run.key, other.key}
    # the study's own run keeps the cell id it had without a teacher axis
    plain = S.make_cell({"gamma": 0.5})
    assert plain.id(study.config) in {c.id(study.config) for c in cells}
    res = run_study("teachers")
    assert len(res) == 2
    by_run = {r["teacher_run"]: r for r in res}
    assert by_run[other.key]["label"].startswith("teacher: adapter")
    ids = [r["adapters"]["lls"] for r in res]
    assert ids[0] != ids[1]
    from lls.training.adapters import open_adapter

    trained_on = {open_adapter(r["adapters"]["lls"]).manifest["score_run"]
                  for r in res}
    assert trained_on == {tiny_run.key, other.key}
    own = _json.loads(study.levels_path().read_text())["levels"]
    taught = _json.loads(study.levels_path(other.key).read_text())["levels"]
    kind = study.config.sampled["kinds"][0]
    assert own[kind]["base"] == taught[kind]["base"]  # one base for every teacher
    assert [n for n, _ in study.teacher_levels()][1].startswith("adapter")
    # a run of other pairs cannot join the axis
    data = synthetic_pairs_file(tmp_path / "other.jsonl", 12, seed=3)
    elsewhere = score(ScoreConfig(DataSpec(str(data)), animal("owl"),
                                  model=ModelSpec(cfg.model.name), truncation=8, chunk_size=8))
    with pytest.raises(S.StudyError, match="differs from the study's run"):
        S.create_study(S.StudyConfig(name="mixed", run=tiny_run.key,
                                   grid={"teacher": [elsewhere.key]}, recipe=RECIPE,
                                   sampled=SAMPLED))
