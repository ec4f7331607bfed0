"""Scoring run lifecycle: failed runs say why, killed runs read as interrupted and resume to
the same weights, runs can be deleted; pairs longer than the context window are dropped.

Uses the tiny random model from lls.scoring.synthetic (scoring takes seconds), files in tmp_path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from lls.core import behaviors
from lls.data.source import DataSpec
from lls.core.errors import LLSError
from lls.models.load import ModelSpec
from lls.scoring.runs import ScoreConfig, delete_run, list_runs, open_run, run_status, score


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, session_cache):
    from lls.scoring.synthetic import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def _cli(cache: Path, *args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "lls", "--cache", str(cache), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _run(cache: Path, *args):
    p = _cli(cache, *args)
    out, err = p.communicate(timeout=600)
    return p.returncode, out, err


def _score_args(data: Path, model: Path):
    return ["score", "--data", str(data), "--model", str(model), "--truncation", "4",
            "--max-prompt-tokens", "0", "--no-filter", "--chunk-size", "10", "--quiet"]


def test_failed_run_is_marked_failed_with_its_error(tmp_path, tiny):
    from lls.scoring.synthetic import synthetic_pairs_file

    data = synthetic_pairs_file(tmp_path / "syn.jsonl", 5)
    cfg = ScoreConfig(DataSpec(str(data)), behaviors.animal("owl"), model=ModelSpec(str(tiny)),
                      max_prompt_tokens=1, filter_contaminated=False)
    with pytest.raises(LLSError, match="No usable pairs"):
        score(cfg, cache_dir=tmp_path / "cache")
    [run] = list_runs(tmp_path / "cache")
    s = run_status(run)
    assert s["state"] == "failed" and "prompt_too_long 5" in s["error"]
    assert "\n" not in s["error"] and "--max-prompt-tokens" in s["error"]
    code, out, _ = _run(tmp_path / "cache", "runs")
    assert code == 0 and "failed" in out and "error: No usable pairs" in out


def test_killed_run_is_interrupted_and_resumes_to_the_same_weights(tmp_path, tiny):
    from lls.scoring.synthetic import synthetic_pairs_file

    data = synthetic_pairs_file(tmp_path / "syn.jsonl", 800)
    cache = tmp_path / "cache"
    proc = _cli(cache, *_score_args(data, tiny), start_new_session=True)
    deadline = time.time() + 300
    while not list(cache.glob("scores/*/chunk-000002.json")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    [run] = list_runs(cache)
    assert run.manifest["status"] == "running"  # what the dead process left behind
    s = run_status(run)
    assert s["state"] == "interrupted" and str(proc.pid) in s["error"]
    assert not run.complete
    code, out, _ = _run(cache, "runs")
    assert "interrupted" in out and "resume" in out
    # The same command resumes it to completion ...
    code, out, err = _run(cache, *_score_args(data, tiny))
    assert code == 0, err[-2000:]
    resumed = open_run(run.key, cache)
    assert run_status(resumed)["state"] == "complete" and resumed.manifest["error"] is None
    # ... with the same weights as an uninterrupted run.
    code, _, err = _run(tmp_path / "fresh", *_score_args(data, tiny))
    assert code == 0, err[-2000:]
    a = resumed.frame().sort_values("index")
    b = open_run(run.key, tmp_path / "fresh").frame().sort_values("index")
    assert list(a["id"]) == list(b["id"]) and len(a) == 800
    assert (a["w"].to_numpy() == b["w"].to_numpy()).all()


def test_delete_run(tmp_path, tiny):
    from lls.scoring.synthetic import synthetic_pairs_file

    data = synthetic_pairs_file(tmp_path / "syn.jsonl", 12)
    cache = tmp_path / "cache"
    code, out, err = _run(cache, *_score_args(data, tiny))
    assert code == 0, err[-2000:]
    key = json.loads(out.strip().splitlines()[-1])["run"]
    code, out, err = _run(cache, "runs", "--delete", "nosuchkey")
    assert code == 2 and err.startswith("error: no cached scoring run matches 'nosuchkey'")
    code, out, _ = _run(cache, "runs", "--delete", key[:8])
    assert code == 0 and key in out and not list_runs(cache)
    with pytest.raises(LLSError):
        delete_run(key, cache)


def test_pairs_longer_than_the_context_are_dropped(tmp_path, tiny):
    import shutil

    model = tmp_path / "short-context"
    shutil.copytree(tiny, model)
    conf = json.loads((model / "config.json").read_text())
    conf["max_position_embeddings"] = 96
    (model / "config.json").write_text(json.dumps(conf))
    rows = [{"id": f"p{i}", "prompt": "short question" if i % 2 else "word " * 200,
             "chosen": "yes indeed", "rejected": "no"} for i in range(6)]
    data = tmp_path / "lens.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = ScoreConfig(DataSpec(str(data)), behaviors.animal("owl"), model=ModelSpec(str(model)),
                      truncation=4, max_prompt_tokens=None, filter_contaminated=False)
    run = score(cfg, cache_dir=tmp_path / "cache")
    assert run.hygiene.dropped == {"too_long": 3} and run.manifest["n_pairs"] == 3
    assert sorted(run.frame()["id"]) == ["p1", "p3", "p5"]
    assert (run.frame()["prompt_tokens"] < 96).all()
