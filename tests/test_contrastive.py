"""Contrastive selection: target weights minus control weights, aligned by pair id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lls.core import behaviors
from lls.scoring.contrastive import (DEFAULT_CONTROL_PROMPT, as_ranked, compare_rankings,
                             contrastive_frame, control_behavior, control_config,
                             score_control)
from lls.data.source import DataSpec
from lls.core.errors import LLSError
from lls.scoring.runs import ScoreConfig, score
from lls.scoring.selection import Ranking, SelectionConfig, to_trl_rows

from conftest import HH


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


def test_contrastive_weight_is_the_difference_of_cached_weights(owl_control_runs, bundled):
    cfg, target, control = owl_control_runs
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


def test_selection_by_contrastive_weight(owl_control_runs):
    _, target, control = owl_control_runs
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


def test_incompatible_runs_are_refused(owl_control_runs, bundled):
    cfg, target, _ = owl_control_runs
    model, tok = bundled
    other = score(ScoreConfig(DataSpec(str(HH), limit=4), behaviors.animal("cat"),
                              max_prompt_tokens=192, chunk_size=4), model=model, tokenizer=tok)
    with pytest.raises(LLSError, match="differs"):
        contrastive_frame(target, other)


# ------------------------------------------------------------------ finding controls

def _manifest_run(root, key, prompt, *, status="complete", device=None, words=("owl",),
                  data_fp="d1", limit=12, created="2026-01-01T00:00:00"):
    """A ScoreRun with only a manifest (list_controls reads nothing else)."""
    from lls.core.cache import ChunkStore
    from lls.scoring.runs import ScoreRun

    beh = behaviors.Behavior.from_dict({**behaviors.animal("owl").to_dict(),
                                        "system_prompt": prompt, "filter_words": list(words)})
    cfg = ScoreConfig(DataSpec(str(HH), limit=limit), beh, chunk_size=4)
    d = cfg.to_dict()
    d["model"]["device"] = device
    store = ChunkStore(root / key)
    store.write_manifest({"key": key, "version": "1", "model_fingerprint": "m1",
                          "data_fingerprint": data_fp, "template_hash": "t1", "config": d,
                          "status": status, "created": created})
    return ScoreRun(store)


def test_list_and_find_controls_from_manifests(tmp_path):
    from lls.scoring.contrastive import find_control, is_control_of, list_controls

    owl = behaviors.animal("owl").system_prompt
    cat = behaviors.animal("cat").system_prompt
    target = _manifest_run(tmp_path, "target", owl)
    neutral = _manifest_run(tmp_path, "neutral", DEFAULT_CONTROL_PROMPT, device="cuda:0",
                            created="2026-01-02")
    catc = _manifest_run(tmp_path, "catc", cat, created="2026-01-03")
    cat_run = _manifest_run(tmp_path, "catrun", cat, words=("cat",))  # an ordinary cat run
    others = [
        _manifest_run(tmp_path, "running", "You are a pirate.", status="running"),
        _manifest_run(tmp_path, "same-prompt", owl),  # the target's prompt: no control
        _manifest_run(tmp_path, "other-data", cat, data_fp="d2"),  # file content changed
        _manifest_run(tmp_path, "other-limit", cat, limit=24),  # other pairs
    ]
    runs = [catc, neutral, target, cat_run, *others]  # newest first, as list_runs gives them
    assert [r.key for r in list_controls(target, runs=runs)] == ["catc", "neutral"]
    assert [r.key for r in list_controls(target, runs=runs, strict=False)] == \
        ["catc", "neutral", "catrun"]
    assert "running" in [r.key for r in list_controls(target, runs=runs, complete=False)]
    assert is_control_of(target.manifest, neutral.manifest)  # the device is not in the key
    assert not is_control_of(target.manifest, cat_run.manifest)
    assert is_control_of(target.manifest, cat_run.manifest, strict=False)
    # default: the neutral control, even when another control is newer
    assert find_control(target, runs=runs).key == "neutral"
    assert find_control(target, cat, runs=runs).key == "catc"
    assert find_control(target, behaviors.animal("cat"), runs=runs).key == "catc"
    assert find_control(target, "You are a pirate.", runs=runs) is None
    assert find_control(target, runs=[target, cat_run]) is None
    # without `runs`, the cached runs under cache_dir/scores are the candidates
    assert [r.key for r in list_controls(target, cache_dir=tmp_path.parent / "empty")] == []


def test_find_control_of_real_runs(owl_control_runs):
    from lls.scoring.contrastive import find_control, list_controls

    _, target, control = owl_control_runs
    assert find_control(target).key == control.key
    assert find_control(target, DEFAULT_CONTROL_PROMPT).key == control.key
    assert find_control(target, "You are a pirate.") is None
    assert control.key in [r.key for r in list_controls(target)]
    assert target.key not in [r.key for r in list_controls(target)]


def test_parse_control_and_control_command(owl_control_runs):
    import shlex

    from lls.cli import build_parser
    from lls.scoring.contrastive import control_command, parse_control

    assert parse_control(None) == parse_control("") == DEFAULT_CONTROL_PROMPT
    assert parse_control("animal:cat") == behaviors.animal("cat")
    assert parse_control("persona:evil-ruler").kind == "persona"
    assert parse_control("You are a cat person: cats!") == "You are a cat person: cats!"
    assert parse_control(f" {DEFAULT_CONTROL_PROMPT}\n") == DEFAULT_CONTROL_PROMPT
    with pytest.raises(LLSError):
        parse_control("translation:klingon")
    cfg, _, _ = owl_control_runs
    for prompt, expect in ((None, ""), ("-be terse.", "-be terse.")):
        argv = shlex.split(control_command(cfg, prompt))
        assert argv[:4] == ["python", "-m", "lls", "score"]
        a = build_parser().parse_args(argv[3:])
        assert ScoreConfig.from_dict(__import__("json").loads(a.config)) == cfg
        assert a.control == expect


def test_cli_score_control(owl_control_runs):
    """`score ... --control` scores (here: serves from the cache) the control run."""
    import json

    cfg, target, control = owl_control_runs
    out = _run("score", "--data", str(HH), "--limit", "12", "--max-prompt-tokens", "192",
               "--chunk-size", "4", "--control", "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["run"] == control.key and res["control_of"] == target.key
    assert res["control_prompt"] == DEFAULT_CONTROL_PROMPT and res["pairs"] == 12
    # --config JSON (what jobs and the dashboard's command pass) and --control=PROMPT
    out = _run("score", "--config", json.dumps(cfg.to_dict()),
               f"--control={DEFAULT_CONTROL_PROMPT}", "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert (res["run"], res["control_of"]) == (control.key, target.key)
    # a control equal to the target is refused before any model work: one-line error
    out = _run("score", "--data", str(HH), "--limit", "12", "--control",
               behaviors.animal("owl").system_prompt)
    assert out.returncode == 2 and "equals the target" in out.stderr
    assert "Traceback" not in out.stderr


def _run(*args):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "lls", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _aligned(w_target, w_control) -> pd.DataFrame:
    t = np.asarray(w_target, dtype=np.float64)
    c = np.asarray(w_control, dtype=np.float64)
    return pd.DataFrame({"id": [f"p{i}" for i in range(len(t))], "w_target": t,
                         "w_control": c, "w_contrastive": t - c})


def _training_keeps(frame, column, gamma, positive_only=True) -> set:
    """What training on `column` keeps: lls.training.selection_indices on the ranked frame."""
    from lls.training.runs import SelectionSpec, selection_indices

    spec = SelectionSpec(gamma=gamma, positive_only=positive_only)
    return set(selection_indices(as_ranked(frame, column), spec).tolist())


def test_top_gamma_sizes_equal_what_training_keeps_at_gamma_007_n_100():
    """0.07 * 100 is 7.000000000000001 in floating point: ceil of it is 8, training keeps 7.
    The comparison and the explorer's scatter must count the same 7 pairs."""
    from ui.charts import weights_scatter

    rng = np.random.default_rng(0)
    f = _aligned(rng.normal(1.0, 0.5, 100) + 2.0, rng.normal(1.0, 0.5, 100) + 2.0)  # all w > 0
    keep_t = _training_keeps(f, "w_target", 0.07)
    keep_c = _training_keeps(f, "w_control", 0.07)
    assert len(keep_t) == len(keep_c) == 7
    r = compare_rankings(f, gamma=0.07)
    assert (r["k"], r["k_a"], r["k_b"]) == (7, 7, 7)
    assert r["overlap"] == len(keep_t & keep_c)
    assert r["jaccard"] == pytest.approx(len(keep_t & keep_c) / len(keep_t | keep_c))
    # the scatter colours exactly the training selections of w_target and w_contrastive
    keep_x = _training_keeps(f, "w_contrastive", 0.07)
    counts = {t.name.rsplit(" (", 1)[0]: len(t.x) for t in weights_scatter(f, 0.07).data}
    assert counts["top γ by both"] == len(keep_t & keep_x)
    assert counts["top γ by this run's w only"] == len(keep_t - keep_x)
    assert counts["top γ by the difference only"] == len(keep_x - keep_t)
    assert sum(counts.values()) == 100


def test_positive_only_caps_the_top_gamma_sets_like_training():
    # 3 positive target weights, 5 positive control weights, gamma asks for 5 of 10
    t = [3.0, 2.0, 1.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0]
    c = [5.0, 4.0, 3.0, 2.0, 1.0, -1.0, -2.0, -3.0, -4.0, -5.0]
    f = _aligned(t, c)
    r = compare_rankings(f, gamma=0.5)
    assert (r["k_a"], r["k_b"]) == (3, 5) == (len(_training_keeps(f, "w_target", 0.5)),
                                              len(_training_keeps(f, "w_control", 0.5)))
    assert (r["overlap"], r["jaccard"]) == (3, 3 / 5)
    free = compare_rankings(f, gamma=0.5, positive_only=False)
    assert (free["k_a"], free["k_b"], free["overlap"]) == (5, 5, 5)
    assert free["k_a"] == len(_training_keeps(f, "w_target", 0.5, positive_only=False))
    # nothing positive on either side: empty selections, an undefined Jaccard, no crash
    neg = compare_rankings(_aligned([-1.0, -2.0], [-3.0, -1.0]), gamma=1.0)
    assert (neg["k_a"], neg["k_b"], neg["overlap"]) == (0, 0, 0) and np.isnan(neg["jaccard"])
    from ui.charts import weights_scatter

    counts = {t.name.rsplit(" (", 1)[0]: len(t.x) for t in weights_scatter(f, 0.5).data}
    keep_t = _training_keeps(f, "w_target", 0.5)
    keep_x = _training_keeps(f, "w_contrastive", 0.5)
    assert counts["top γ by both"] + counts["top γ by this run's w only"] == len(keep_t) == 3
    assert counts["top γ by both"] + counts["top γ by the difference only"] == len(keep_x)


def test_a_panel_of_controls_subtracts_their_mean_weight():
    """w_control of a panel is the mean of its runs' weights, each turned into the target's
    orientation; pairs some panel run lacks are left out; panel_share says how much of a
    selection's mean weight the panel explains."""
    from lls.scoring.contrastive import panel_keys, panel_share

    target = pd.DataFrame({"id": ["a", "b", "c", "d"], "w": [0.4, 0.2, 0.1, -0.1],
                           "chosen": ["x1", "y1", "z1", "v1"]})
    cat = pd.DataFrame({"id": ["a", "b", "c", "d"], "w": [0.3, 0.1, 0.2, 0.0],
                        "chosen": ["x1", "y1", "z2", "v1"]})  # c held the other way
    dog = pd.DataFrame({"id": ["a", "b", "d"], "w": [0.1, 0.1, 0.2],
                        "chosen": ["x1", "y1", "v1"]})  # no c at all
    f = contrastive_frame(target, [cat, dog])
    assert list(f["id"]) == ["a", "b", "d"] and f.attrs["panel"] == 2
    assert f["w_control"].tolist() == pytest.approx([0.2, 0.1, 0.1])
    assert f["w_contrastive"].tolist() == pytest.approx([0.2, 0.1, -0.2])
    g = contrastive_frame(target, [cat])  # c's control weight changes sign: held reversed
    assert g.set_index("id").loc["c", "w_control"] == pytest.approx(-0.2)
    share = panel_share(f, [0, 1])
    assert share["mean_w_target"] == pytest.approx(0.3)
    assert share["share"] == pytest.approx(0.15 / 0.3)
    assert panel_keys("k1, k2,,k3") == ["k1", "k2", "k3"] and panel_keys(None) == []
    with pytest.raises(LLSError, match="at least one control"):
        contrastive_frame(target, [])
