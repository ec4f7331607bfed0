"""The command line: help, headless score/select/export, one-line errors."""

import json
import os
import re
import subprocess
import sys

from conftest import HH, ROOT


def _run(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "lls", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_help():
    out = _run("--help")
    assert out.returncode == 0
    for cmd in ("score", "select", "export", "runs"):
        assert cmd in out.stdout


def test_bad_input_is_one_line_error(tmp_path):
    out = _run("score", "--data", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and "missing.jsonl" in lines[-1]
    assert "Traceback" not in out.stderr
    out = _run("select", "--run", "nosuchrun")
    assert out.returncode == 2 and "python -m lls runs" in out.stderr


def test_score_select_export(small_run, tmp_path):
    # Same settings as the session's run: served from the cache, no model work.
    out = _run("score", "--data", str(HH), "--limit", "24", "--max-prompt-tokens", "192",
               "--chunk-size", "8", "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["run"] == small_run.key and res["pairs"] == 24
    out = _run("select", "--run", small_run.key[:8], "--gamma", "0.25")
    sel = json.loads(out.stdout)
    assert sel["selected"] == min(6, sel["positive"]) and sel["pairs"] == 24
    out = _run("select", "--run", small_run.key, "--gamma", "0.25", "--random", "--seed", "3")
    assert json.loads(out.stdout)["selected"] == sel["selected"]
    dst = tmp_path / "sel.jsonl"
    out = _run("export", "--run", small_run.key, "--gamma", "0.25", "--out", str(dst))
    assert out.returncode == 0
    rows = [json.loads(x) for x in dst.read_text().splitlines()]
    assert len(rows) == sel["selected"] and rows[0]["w"] >= rows[-1]["w"]
    out = _run("runs")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith(small_run.key))
    assert " float32 " in line  # the precision the run was scored in


def test_score_bar_of_a_finished_run_shows_no_made_up_rate(small_run):
    # The bar starts when the first chunk (or a resumed run's cached pairs) is in: those pairs
    # took no time on the bar's clock, and must not count towards its rate and ETA.
    out = _run("score", "--data", str(HH), "--limit", "24", "--max-prompt-tokens", "192",
               "--chunk-size", "8")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "24/24" in out.stderr, out.stderr[-2000:]
    rates = [float(r) for r in re.findall(r"([0-9.]+)pair/s", out.stderr)]
    assert all(r < 1000 for r in rates), out.stderr[-2000:]


def _one_line_error(out):
    """Exit 2, and stderr is exactly one `error:` line: no traceback, no progress bar."""
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    return lines[0]


def test_score_bad_line_stops_before_the_model_with_its_position(tmp_path):
    lines = [json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) for i in range(30)]
    lines[17] = '{"prompt": "q", "chosen": "cut'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # A model that does not exist: the data error must come first, before any model work.
    err = _one_line_error(_run("score", "--data", str(path), "--model", str(tmp_path / "nomodel")))
    assert "line 18 is not valid JSON" in err and "--skip-malformed" in err
    assert "skip_malformed=True" not in err


def test_score_truncated_gzip_fails_with_and_without_limit(tmp_path):
    import gzip

    data = gzip.compress("".join(json.dumps({"prompt": f"q{i}", "chosen": "a",
                                             "rejected": "b"}) + "\n"
                                 for i in range(3000)).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    for extra in ([], ["--limit", "20"]):
        err = _one_line_error(_run("score", "--data", str(path), "--model",
                                   str(tmp_path / "nomodel"), *extra))
        assert "ends early after line" in err and "--skip-malformed" in err


def test_score_pairwise_mapping_never_scores_json_text(tmp_path):
    # Ties only: nothing usable, and the error says why (the tie count), before the model.
    row = {"prompt": json.dumps(["q"]), "response_a": json.dumps(["a"]),
           "response_b": json.dumps(["b"]), "winner_model_a": 0, "winner_model_b": 0,
           "winner_tie": 1}
    path = tmp_path / "ties.jsonl"
    path.write_text(json.dumps(row) + "\n")
    err = _one_line_error(_run("score", "--data", str(path), "--columns",
                               "prompt=prompt,chosen=response_a,rejected=response_b"))
    assert "ties (neither response preferred) 1" in err and "No usable pairs" in err
