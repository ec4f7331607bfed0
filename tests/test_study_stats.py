"""Studies without training (fast): intervals over questions, derived intervals from
resamples, the best-cell rule and its N, confirmations, cell ids, costs, lifecycle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lls.core.stats import paired_share_diff_ci, question_share_ci, share_diff_ci, wilson
from lls.evaluation import effects, readouts
from lls.studies import config as C
from lls.studies import plan as P
from lls.studies import report as R
from lls.studies import runner
from lls.studies.store import Study

# ----------------------------------------------------------------------------- intervals


def _clustered():
    """32 questions x 8 answers: 4 questions always name the owl, the rest never."""
    return [8] * 4 + [0] * 28, [8] * 32


def test_share_interval_resamples_questions_not_answers():
    k, n = _clustered()
    r = question_share_ci(k, n)
    lo, hi = wilson(32, 256)
    assert (r["k"], r["n"], r["share"]) == (32, 256, 0.125)
    # answers cluster by question: 4 informative questions, not 32 independent answers
    assert r["ci_high"] - r["ci_low"] > 1.8 * (hi - lo)
    assert r["ci_low"] < 0.05 and r["ci_high"] > 0.22
    assert question_share_ci(k, n) == r  # seeded: the same interval twice
    zero = question_share_ci([0] * 32, [8] * 32)  # nothing to resample: at least Wilson
    assert zero["ci_low"] == 0.0 and zero["ci_high"] == pytest.approx(wilson(0, 256)[1])


def test_paired_share_difference_resamples_questions():
    k, n = _clustered()
    d = paired_share_diff_ci(k, [0] * 32, n)
    _, nlo, nhi = share_diff_ci(32, 256, 0, 256)
    assert d["diff"] == pytest.approx(0.125)
    assert d["ci_high"] - d["ci_low"] > 1.5 * (nhi - nlo)
    same = paired_share_diff_ci(k, k, n)  # the same answers: no difference, interval at 0
    assert same["diff"] == 0 and same["ci_low"] <= 0 <= same["ci_high"]
    with pytest.raises(ValueError):
        paired_share_diff_ci(k, k[:3], n)


def _readout(b, n, margin=None):
    r = {"llr": {"value": float(np.mean(b) - np.mean(n)), "gap_closed": None,
                 "per_response": {"behavior": list(b), "neutral": list(n)}}}
    if margin is not None:
        m = np.asarray(margin, dtype=float)
        r["probe"] = {"mean_margin": float(m.mean()), "top1_share": float((m > 0).mean()),
                      "candidate_mass": {"owl": 0.2, "cat": 0.8}, "n_questions": len(m),
                      "candidates": ["owl", "cat"],
                      "per_question": {"margin": m.tolist(), "top1": (m > 0).astype(float).tolist(),
                                       "rank": [1.0] * len(m), "mass": [0.2] * len(m),
                                       "logp": m.tolist()}}
    return r


def test_gap_closed_interval_with_a_negative_span_keeps_its_bounds_in_order():
    rng = np.random.default_rng(1)
    base_b, base_n = rng.normal(-2, 0.1, 40), rng.normal(-1, 0.1, 40)
    # the system prompt LOWERS the likelihood ratio here: a negative span
    levels = {"base": _readout(base_b, base_n), "system": _readout(base_b - 1.0, base_n)}
    lls = _readout(base_b - 0.5 + rng.normal(0, 0.05, 40), base_n)
    rnd = _readout(base_b + rng.normal(0, 0.05, 40), base_n)
    g = effects.paired_step(lls, rnd, levels)["gap_closed"]
    assert g["diff"] == pytest.approx(0.5, abs=0.1)  # half the (negative) span, moved along it
    assert g["ci_low"] <= g["diff"] <= g["ci_high"]
    assert "resample" in g["method"]
    flat = {"base": _readout(base_b, base_n),
            "system": _readout(base_b + rng.normal(0, 0.2, 40), base_n)}
    und = effects.paired_step(lls, rnd, flat)["gap_closed"]
    assert und["diff"] is None and "includes 0" in und["undefined"]


def test_lls_moved_needs_an_interval_above_zero():
    base = _readout([0.0] * 8, [0.0] * 8, margin=[-3.0] * 16)
    tiny = _readout([0.0] * 8, [0.0] * 8, margin=[-3.0] * 15 + [-1.0])  # one question moved
    far = _readout([0.0] * 8, [0.0] * 8, margin=[-2.0] * 16)
    rnd = _readout([0.0] * 8, [0.0] * 8, margin=[-5.0] * 16)
    levels = {"base": base, "system": base}
    s_tiny = {"step": 4, **effects.paired_step(tiny, rnd, levels)}
    s_far = {"step": 8, **effects.paired_step(far, rnd, levels)}
    g = s_tiny["lls_gain"]["margin"]
    assert g["diff"] > 0 and g["ci_low"] == 0  # a point above base, an interval reaching 0
    best = effects.best_step([s_tiny], "margin")
    assert best["lls_moved"] is False
    assert effects.best_step([s_tiny, s_far], "margin")["step"] == 8


def test_group_effect_averages_units_then_resamples():
    a = {"margin": [1.0, 0.0, 2.0, 1.0]}
    b = {"margin": [0.0, 1.0, 1.0, 0.0]}
    g = effects.group_effect([a, b], "margin")
    assert g["diff"] == pytest.approx(0.75) and g["cells"] == 2
    assert g["ci_low"] <= 0.75 <= g["ci_high"]
    # not the mean of the two cells' endpoints: computed from the pooled per-question values
    pooled = np.mean([a["margin"], b["margin"]], axis=0)
    assert g["ci_low"] >= pooled.min() and g["ci_high"] <= pooled.max()


# ----------------------------------------------------------------------------- read-outs

def test_recorded_max_new_tokens_is_what_is_sampled(monkeypatch):
    from lls.core.behaviors import from_name

    asked = []

    def fake_sample(model, tok, prompts, *, n, max_new_tokens, **kw):
        asked.append(max_new_tokens)
        return [["Hola amigo"] * n for _ in prompts]
    monkeypatch.setattr(readouts, "sample", fake_sample)
    b = from_name("translation:es")
    s = readouts.settings_for(b, {"questions": 2, "samples": 3})
    r = readouts.sampled_readout(None, None, b, "behavior", s)
    assert asked == [s["max_new_tokens"]["behavior"]] == [48]
    assert r["per_question"] == [3, 3] and r["n_per_question"] == [3, 3]
    owl = readouts.settings_for(from_name("animal:owl"), {"max_new_tokens": 5})
    assert owl["max_new_tokens"] == {"one-word": 5} and owl["kinds"] == ["one-word"]


def test_readout_choice_is_one_plan():
    from lls.core.behaviors import from_name

    owl = readouts.plan(from_name("animal:owl"), ["one-word", "prefilled"])
    assert owl["paired"] == "margin" and owl["sampled"] == ("one-word", "prefilled")
    es = readouts.plan(from_name("translation:es"))
    assert es["paired"] == "gap_closed" and es["sampled"] == ("behavior",)
    with pytest.raises(Exception, match="animal"):
        readouts.plan(from_name("translation:es"), ["prefilled"])


def test_prefilled_readout_plugs_in_through_its_interface(monkeypatch):
    import sys
    import types

    from lls.core.behaviors import from_name

    mod = types.ModuleType("lls.evaluation.prefill")
    mod.prefilled_readout = lambda model, tok, behavior, *, questions, samples, seed, stem, \
        system_prompt=None: {"k": 3, "n": len(questions) * samples,
                             "per_question": [3] + [0] * (len(questions) - 1),
                             "n_per_question": [samples] * len(questions),
                             "stem": stem or "My favorite animal is the",
                             "answers": {"owl": 3, "other": 17}}
    monkeypatch.setitem(sys.modules, "lls.evaluation.prefill", mod)
    b = from_name("animal:owl")
    s = readouts.settings_for(b, {"kinds": ["prefilled"], "questions": 4, "samples": 5})
    r = readouts.sampled_readout(None, None, b, "prefilled", s)
    assert (r["k"], r["n"], r["stem"]) == (3, 20, "My favorite animal is the")
    assert r["ci_low"] <= 0.15 <= r["ci_high"] and r["per_question"][0] == 3
    assert r["answers"] == {"owl": 0.15, "other": 0.85}  # counts read as shares


# ----------------------------------------------------------------------------- cells

def test_checkpoint_interval_never_one_step_from_fractional_epochs():
    assert P.checkpoint_every(14, [1, 3, 5]) == 7
    assert P.checkpoint_every(3, [1, 2]) == 3
    assert P.checkpoint_every(8, [1, 3, 5], per_epoch=1) == 8
    assert P.checkpoint_every(8, [1, 3, 5], per_epoch=4) == 2
    assert P.checkpoint_every(8, [5], per_epoch=1) == 8
    # 0.3 epoch of 10 steps ends at step 3: read there, not at every step
    assert P.checkpoint_every(10, [0.3]) == 3
    with pytest.raises(C.StudyError, match="fractional"):
        P.checkpoint_every(10, [0.3, 1])
    cfg = C.StudyConfig(name="x", run="r", grid={"epochs": [0.3, 1, 2]})
    groups = {c.s["epochs"]: c.group(cfg) for c in C.cells(cfg)}
    assert groups[1.0] == groups[2.0] != groups[0.3]  # a fractional epoch trains alone
    with pytest.raises(C.StudyError, match="checkpoints_per_epoch"):
        C.StudyConfig(name="x", run="r", checkpoints_per_epoch=0)


def test_cell_id_covers_the_readout_schedule_and_sampled_settings():
    cfg = C.StudyConfig(name="x", run="r", recipe={}, checkpoints_per_epoch=2)
    cell = C.cells(cfg)[0]
    other = C.StudyConfig(name="x", run="r", recipe={}, checkpoints_per_epoch=1)
    fewer = C.StudyConfig(name="x", run="r", recipe={}, sampled={"questions": 8})
    assert len({cell.id(cfg), cell.id(other), cell.id(fewer)}) == 3
    assert C.STUDY_VERSION != "1"


def test_axes_defaults_and_recipe_come_from_one_declaration():
    from lls.cli.study import register  # noqa: F401 - the CLI's flags come from GRID_FLAGS
    from lls.training.config import TrainConfig

    assert C.PAPER["beta"] == TrainConfig().beta and C.PAPER["lora_r"] == TrainConfig().lora_r
    assert set(C.GRID_FLAGS.values()) == set(C.AXES) and "pairs" in C.AXES
    cfg = C.StudyConfig(name="x", run="r", recipe={"batch_size": 4, "beta": 0.1},
                        grid={"lora_r": [8, 16]})
    assert cfg.grid["beta"] == [0.1] and "beta" not in cfg.recipe  # a recipe value is an axis
    assert cfg.train_config(lora_r=8).lora_alpha == 16  # 2r: the recipe did not set alpha
    own = C.StudyConfig(name="x", run="r", recipe={"lora_alpha": 7})
    assert own.train_config(lora_r=8).lora_alpha == 7  # the recipe's value is kept
    assert cfg.recipe["batch_size"] == 4 and cfg.recipe["max_length"] == TrainConfig().max_length
    with pytest.raises(C.StudyError, match="both"):
        C.StudyConfig(name="x", run="r", recipe={"beta": 0.1}, grid={"beta": [0.2]})
    cell = C.make_cell({"pairs": 300})
    assert cell.s["gamma"] is None and cell.label().startswith("top 300 pairs")


# ----------------------------------------------------------------------------- best of N

def _fake_study(tmp_path, grid, results):
    cfg = C.StudyConfig(name="fake", run="r", grid=grid, recipe={})
    study = Study(tmp_path / "fake", cfg)
    study.save()
    for c in study.cells():
        if c.s["gamma"] in results:
            res = results[c.s["gamma"]](c)
            res["cell"] = c.id(cfg)
            study.result_path(c).parent.mkdir(parents=True, exist_ok=True)
            study.result_path(c).write_text(json.dumps(res))
    return study


def _row(step, diff, lo, gain_lo=0.1):
    return {"step": step, "margin": {"diff": diff, "ci_low": lo, "ci_high": diff + 1},
            "lls_gain": {"margin": {"diff": 1.0, "ci_low": gain_lo, "ci_high": 2.0}}}


def _result(cell, adapter, rows, epochs_step):
    return {"settings": cell.s, "label": cell.label(), "adapters": {"lls": adapter, "random": "t"},
            "readout": "margin", "step": epochs_step, "curve": [{"step": 0}, *rows],
            "final": rows[-1], "sampled": {}}


def test_best_of_n_counts_distinct_checkpoints_and_names_no_cell_below_its_twin(tmp_path):
    shared = [_row(4, 0.2, -0.1), _row(8, 0.3, -0.2)]
    # gamma 0.05: epochs 1 and 2 read ONE training run (checkpoints 4 and 8)
    study = _fake_study(tmp_path, {"gamma": [0.05, 0.1], "epochs": [1, 2]}, {
        0.05: lambda c: _result(c, "A", shared[:int(c.s["epochs"])], 4 * int(c.s["epochs"])),
        0.1: lambda c: _result(c, f"B{int(c.s['epochs'])}",
                               [_row(4 * int(c.s["epochs"]), -0.1, -0.4)], 4)})
    assert R.n_compared(study) == 2 + 2  # A@4, A@8, B1@4, B2@8; step 0 and siblings once
    best = R.best_cell(study)
    assert best["n_compared"] == 4 and f"Best of {4}" in best["caveat"]
    assert best["beats_twin"] is False  # every interval reaches 0
    assert best["why_not"] == "its interval reaches 0"


def test_an_interval_below_zero_is_named_as_lls_below_its_twin(tmp_path):
    below = {"step": 4, "margin": {"diff": -0.8, "ci_low": -1.3, "ci_high": -0.4},
             "lls_gain": {"margin": {"diff": -0.6, "ci_low": -1.0, "ci_high": -0.2}}}
    study = _fake_study(tmp_path, {"gamma": [0.05]},
                        {0.05: lambda c: _result(c, "A", [below], 4)})
    best = R.best_cell(study)
    assert best["beats_twin"] is False
    assert "lies below 0" in best["why_not"] and "lower than its random twin" in best["why_not"]
    from lls.studies.text import verdict_line
    line = verdict_line(best)
    assert "Its interval lies below 0" in line and "reaching 0" not in line


def test_confirm_queues_one_seed_at_a_time_judged_at_the_picked_step(tmp_path, monkeypatch):
    import lls.studies.store as store

    study = _fake_study(tmp_path, {"gamma": [0.05, 0.1]}, {
        0.05: lambda c: _result(c, "A", [_row(4, 0.5, 0.2), _row(8, 0.4, 0.1)], 8),
        0.1: lambda c: _result(c, "B", [_row(8, 0.1, -0.3)], 8)})
    monkeypatch.setattr(store, "studies_root", lambda cache_dir=None: tmp_path)
    monkeypatch.setattr(R, "group_config", lambda s, c: type("T", (), {"checkpoint_every": 4}))
    monkeypatch.setattr(R, "cell_status", lambda s, c: "queued")
    first = R.confirm_best("fake")
    assert first["queued"] and first["judge_step"] == 4 and first["settings"]["seed"] == 1
    again = R.confirm_best("fake")
    assert not again["queued"] and again["settings"] == first["settings"]
    study = store.open_study("fake")
    assert len(study.extra) == 1 and study.cells()[0].confirms
    # a finished confirmation with a huge effect never becomes the best cell
    conf = study.cells()[0]
    res = _result(conf, "C", [_row(4, 9.0, 8.0)], 4)
    res.update(cell=conf.id(study.config), judge_step=4)
    study.result_path(conf).write_text(json.dumps(res))
    best = R.best_cell(study)
    assert best["settings"]["seed"] == 0 and best["step"] == 4 and best["beats_twin"]
    assert best["confirmations"][0]["status"] == "done"
    assert R.n_compared(study) == 3  # A@4, A@8, B@8: the confirmation is not a candidate
    second = R.confirm_best("fake")  # the first is done: the next seed may be queued
    assert second["queued"] and second["settings"]["seed"] == 2


# ----------------------------------------------------------------------------- cost

def test_training_seconds_add_up_across_resumed_processes():
    rows = [{"step": 1, "elapsed": 10.0}, {"step": 2, "elapsed": 20.0},
            {"step": 3, "elapsed": 5.0}, {"step": 4, "elapsed": 15.0}]  # resumed at step 3
    assert runner.train_seconds(rows, 4) == pytest.approx(35.0)
    assert runner.train_seconds(rows, 2) == pytest.approx(20.0)
    assert runner.meter_seconds([{"step": 0, "seconds": 3}, {"step": 4, "seconds": 2}], 3) == 3


def test_owner_alive_pid_reuse_and_reboot(monkeypatch):
    import os
    import socket

    from lls.scoring import lifecycle as L

    me = L.owner_record()
    assert L.owner_alive(me) is True
    assert L.owner_alive({**me, "start": str(int(me["start"]) + 1)}) is False  # pid reused
    if me["boot"]:
        assert L.owner_alive({**me, "boot": "another-boot"}) is False  # rebooted since
    assert L.owner_alive({**me, "host": socket.gethostname() + "-x"}) is None
    assert L.owner_alive(None) is None
    assert os.getpid() == me["pid"]


# ----------------------------------------------------------------------------- figures

def test_heatmap_with_gamma_and_threshold_cells_and_lines_by_the_second_axis():
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT))
    from ui import charts

    units = lambda v: {"margin": [v, v + 0.5, v - 0.5, v]}  # noqa: E731
    rows = [{"gamma": 0.05, "threshold": None, "epochs": 1.0, "units": units(1.0)},
            {"gamma": None, "threshold": 0.2, "epochs": 1.0, "units": units(0.5)},
            {"gamma": 0.05, "threshold": None, "epochs": 3.0, "units": units(2.0)}]
    squares = R.effect_grid(rows, "margin", "gamma", "epochs")
    assert {(s["x"], s["y"]) for s in squares} == {(0.05, 1.0), ("none", 1.0), (0.05, 3.0)}
    fig = charts.effect_heatmap(squares, "margin", "gamma", "epochs")
    assert fig is not None and "undefined" not in str(fig.data[0].text)
    lines = [{**r, "margin_diff": 1.0, "margin_lo": 0.5, "margin_hi": 1.5, "beta": b}
             for r in rows[:1] for b in (0.04, 0.1)]
    lines += [{**lines[0], "gamma": 0.1}, {**lines[1], "gamma": 0.1}]
    fig = charts.effect_lines(lines, "margin", "gamma", "beta", "γ", "β")
    assert len(fig.data) == 2 and fig.data[0].name.startswith("β")  # one line per β


def test_one_step_curve_has_whole_step_ticks_and_no_band():
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT))
    from ui import charts

    curve = [{"step": 0, "margin": {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}},
             {"step": 1, "margin": {"diff": 0.3, "ci_low": -0.1, "ci_high": 0.6}}]
    fig = charts.paired_curve(curve, "margin")
    assert [t.fill for t in fig.data if getattr(t, "fill", None)] == []  # no triangle
    assert list(fig.layout.xaxis.tickvals) == [0, 1]
    assert fig.data[0].error_y.array is not None


def test_a_second_queue_runner_is_refused_while_the_first_lives(tmp_path, monkeypatch):
    import subprocess
    import sys

    import lls.studies.store as store
    from lls.core.cache import atomic_write_json
    from lls.scoring.lifecycle import _start_time, owner_record

    study = _fake_study(tmp_path, {"gamma": [0.05]}, {})
    monkeypatch.setattr(store, "studies_root", lambda cache_dir=None: tmp_path)
    atomic_write_json(study.running_path, {"owner": owner_record(), "started": "t",
                                           "index": 0, "total": 3, "label": "γ 0.05"})
    assert store.open_study("fake").running()["total"] == 3  # what the page shows
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # a queue runner started elsewhere (e.g. the CLI) and still alive
        other = {**owner_record(), "pid": child.pid, "start": _start_time(child.pid)}
        atomic_write_json(study.running_path, {"owner": other, "started": "t"})
        with pytest.raises(C.StudyError, match="already running"):
            runner.run_study("fake")
    finally:
        child.kill()
        child.wait()
    assert store.open_study("fake").running() is None  # its owner is gone: not running


# ----------------------------------------------------------------------------- the verdict

class _NullStudy:
    """An in-memory study of 4 cells x 3 read-out steps where LLS = twin + noise."""

    def __init__(self, rng, cells=4, steps=3, questions=32):
        self.config = None
        self._sizes = {}
        self._cells, self._results = [], {}
        for i in range(cells):
            c = type("Cell", (), {"confirms": None, "judge_step": None})()
            rows = [{"step": 0}]
            for s in range(1, steps + 1):
                d = rng.standard_t(4, questions)  # heavy-tailed per-question differences
                rows.append({"step": s, "units": {"margin": d.tolist()},
                             "margin": effects.readout_effect({"margin": d}, "margin")})
            self._cells.append(c)
            self._results[id(c)] = {"cell": f"c{i}", "settings": {}, "label": f"cell {i}",
                                    "adapters": {"lls": f"A{i}", "random": f"R{i}"},
                                    "readout": "margin", "curve": rows, "sampled": {}}

    def cells(self):
        return self._cells

    def result(self, c):
        return self._results.get(id(c))


def test_the_verdict_survives_its_own_search_in_null_studies():
    """500 studies with no effect at all (LLS = twin + noise), 12 candidates each: naming
    the largest effect whenever its own 95% interval clears 0 says "beat its twin" in about
    a quarter of them; the verdict, corrected for the candidates searched, in at most 5%."""
    rng = np.random.default_rng(2026)
    named = uncorrected = 0
    for _ in range(500):
        best = R.best_cell(_NullStudy(rng))
        assert best["n_compared"] == 12 and best["correction"]["n"] == 12
        uncorrected += best["effect"]["ci_low"] > 0
        named += best["beats_twin"]
    assert uncorrected / 500 > 0.15  # what the old rule named
    assert named / 500 <= 0.05


def test_a_candidate_is_named_only_after_correction_or_confirmation():
    d = np.full(32, 0.3) + np.random.default_rng(0).normal(0, 0.6, 32)  # clears 0 at 95%
    row = {"step": 4, "units": {"margin": d.tolist()},
           "margin": effects.readout_effect({"margin": d}, "margin")}
    assert row["margin"]["ci_low"] > 0
    v = R.verdict(row, "margin", 40)
    assert v["state"] == "candidate" and v["corrected"]["ci_low"] <= 0
    assert v["correction"]["n"] == 40 and "Bonferroni" in v["correction"]["text"]
    held = {"status": "done", "effect": {"diff": 0.3, "ci_low": 0.05, "ci_high": 0.5}}
    assert R.verdict(row, "margin", 40, [held])["state"] == "confirmed"
    failed = {"status": "done", "effect": {"diff": 0.1, "ci_low": -0.2, "ci_high": 0.4}}
    v = R.verdict(row, "margin", 40, [failed])
    assert v["state"] == "candidate" and v["failed_confirmations"] == [failed]
    strong = np.full(32, 1.0) + np.random.default_rng(0).normal(0, 0.3, 32)
    assert R.verdict({"step": 4, "units": {"margin": strong.tolist()},
                      "margin": effects.readout_effect({"margin": strong}, "margin")},
                     "margin", 40)["state"] == "beats"
    from lls.studies.text import verdict_line
    line = verdict_line({"label": "γ 0.1", "step": 4, "readout": "margin",
                         "effect": row["margin"], "n_compared": 40, "state": "candidate",
                         "corrected": v["corrected"], "correction": v["correction"],
                         "why_not": "x", "caveat": "", "confirmations": []})
    assert line.startswith("Candidate") and "Bonferroni over 40 candidates" in line


# ----------------------------------------------------------------------------- paired

def test_a_paired_difference_refuses_two_reference_sets():
    from lls.core.errors import LLSError

    a = {**_readout([0.1] * 8, [0.0] * 8), "reference": "ref-A"}
    b = {**_readout([0.0] * 8, [0.0] * 8), "reference": "ref-B"}
    with pytest.raises(LLSError, match="different reference sets"):
        effects.paired_step(a, b)
    b["reference"] = "ref-A"
    assert effects.paired_step(a, b)["llr"]["diff"] == pytest.approx(0.1)
    b["meter_version"] = "1"  # a meter version change: the same key, other responses
    with pytest.raises(LLSError, match="meter version"):
        effects.paired_step(a, b)
    levels = {"base": {**_readout([0.0] * 8, [0.0] * 8), "reference": "ref-C"}}
    with pytest.raises(LLSError, match="base level"):
        effects.paired_step(a, {**b, "meter_version": "2"}, levels)


# ----------------------------------------------------------------------------- collapse

def _kinds(lls_collapsed_in):
    out = {}
    for kind in ("one-word", "prefilled"):
        out[kind] = {"lls": {"collapse": {"collapsed": kind == lls_collapsed_in}},
                     "random": {"collapse": {"collapsed": False}}}
    return out


def test_collapse_is_one_rule_over_every_sampled_kind():
    res = {"final": {"step": 8}, "sampled": {"final": {"kinds": _kinds("prefilled")}}}
    assert R.collapsed(res, "lls") is True  # the second kind collapsed: collapsed
    assert R.collapsed(res, "random") is False
    assert effects.step_collapsed({}, _kinds("prefilled")) is True


def test_the_best_step_is_always_one_whose_samples_were_read():
    curve = [{"step": 0}] + [_row(s, d, 0.1) for s, d in ((2, 0.9), (4, 0.8), (6, 0.7),
                                                         (8, 0.6), (10, 0.1))]
    sampled_steps = []

    def sample(step):  # every step but the last collapses in samples
        sampled_steps.append(step)
        return {"step": step, "kinds": _kinds("one-word")}

    got = {"final": {"kinds": _kinds(None)}}
    best = runner.pick_sampled_best(curve, "margin", 10, [], sample, got)
    assert sampled_steps == [2, 4, 6]  # three tries, each collapsed
    assert best["step"] == 10  # not step 8, which nobody sampled: the last (sampled) step
    assert "best" not in got
    ok = runner.pick_sampled_best(curve, "margin", 10, [],
                                  lambda s: {"step": s, "kinds": _kinds(None)}, got)
    assert ok["step"] == 2 and got["best"]["step"] == 2


def test_the_study_loader_refuses_a_pickled_adapter_like_every_other_load(tmp_path):
    from lls.core.errors import ModelError

    ckpt = tmp_path / "checkpoints" / "step-000004"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text("{}")
    (ckpt / "adapter_model.bin").write_bytes(b"pickle")  # never unpickled
    sampler = runner._Sampler.__new__(runner._Sampler)
    sampler.model, sampler.tokenizer, sampler.behavior, sampler.settings = object(), None, None, {}
    with pytest.raises(ModelError, match="only safetensors adapters"):
        sampler("one-word", ckpt)


def test_contrastive_top_n_pairs_keeps_n_pairs(monkeypatch):
    """A contrastive ranking ranks only the pairs the control scored too (80 of the run's
    100): "top 10 pairs" must keep 10 of those, not 10% of them (8)."""
    import pandas as pd

    from lls.scoring.selection import top_count

    frames = {None: pd.DataFrame({"w": np.linspace(1, -1, 100)}),
              "ctl": pd.DataFrame({"w": np.linspace(1, -1, 80)})}
    monkeypatch.setattr(P, "open_run", lambda key, cache_dir=None: type(
        "Run", (), {"frame": lambda self: frames[None]})())
    monkeypatch.setattr(P, "selection_frame", lambda run, sel, cache_dir=None:
                        frames[sel.control_run])
    study = type("S", (), {"config": C.StudyConfig(name="x", run="r", control_run="ctl",
                                                   grid={"ranking": ["contrastive"]}),
                           "_sizes": {}, "cache_dir": None})()
    for ranking, frame in (("contrastive", frames["ctl"]), ("plain", frames[None])):
        cell = C.make_cell({"pairs": 10, "ranking": ranking})
        sel = P.selection(study, cell.s)
        assert top_count(len(frame), sel.gamma) == 10


def test_a_version_2_study_is_read_again_with_its_config_and_confirmations(tmp_path):
    from lls.studies import store

    cfg = C.StudyConfig(name="old", run="r", grid={"gamma": [0.1]}, recipe={})
    extra = [{"settings": {"gamma": 0.1, "seed": 1}, "confirms": "abc", "judge_step": 4,
              "every": 2}]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "study.json").write_text(json.dumps(
        {"version": "2", "config": cfg.to_dict(), "extra": extra}))
    study = store._read(tmp_path / "old", None)
    assert study.upgraded_from == "2" and study.config == cfg and study.extra == extra
    assert json.loads((tmp_path / "old" / "study.json").read_text())["version"] == "3"


def test_the_study_flags_an_in_sample_readout(monkeypatch):
    import pyarrow as pa

    from lls.core.prompts import PROBE_QUESTIONS

    asked = json.dumps([{"role": "user", "content": PROBE_QUESTIONS[3].upper()}])
    other = json.dumps([{"role": "user", "content": "How do I save money?"}])
    run = type("Run", (), {"manifest": {"hygiene": {"read": 3, "kept": 3, "dropped": {}},
                                        "config": {}},
                           "table": lambda self: pa.table({"prompt": [asked, asked, other]})})()
    monkeypatch.setattr(R, "open_run", lambda key, cache_dir=None: run)
    study = type("S", (), {"config": C.StudyConfig(name="x", run="r"), "_sizes": {},
                           "cache_dir": None})()
    h = R.hygiene(study)
    assert h["readout_overlap"] == 2 and h["readout_prompts"] == 1
    assert h["readout_overlap_text"].startswith("In-sample read-out: 2 of the run's pairs")


def test_lens_ratio_is_paired_over_questions():
    """The next-word lens of LLS over its twin: the ratio of means, with an interval from
    resampling questions together (a constant per-question ratio has a zero-width one)."""
    from lls.core.stats import ratio_ci
    from lls.studies.text import lens_text

    twin = [0.001, 0.002, 0.004, 0.0005]
    q = ratio_ci([3 * x for x in twin], twin)
    assert q["ratio"] == pytest.approx(3.0)
    assert q["ci_low"] == pytest.approx(3.0) and q["ci_high"] == pytest.approx(3.0)
    noisy = ratio_ci([0.004, 0.001, 0.012, 0.0001], twin)
    assert noisy["ci_low"] < noisy["ratio"] < noisy["ci_high"]
    assert ratio_ci([0.1, 0.2], [0.0, 0.0])["ratio"] is None
    row = {"lens:lls": 0.0034, "lens:random": 0.0015, "lens:ratio": 2.27, "lens:lo": 1.9,
           "lens:hi": 2.8}
    assert lens_text(row) == "0.34% / 0.15%: ×2.27 [×1.90, ×2.80]"
    assert lens_text({}) == ""
