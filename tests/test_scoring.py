"""Scoring runs: cache, resume after a kill, corrupt chunks, served-from-cache."""

import os
import shutil
import signal
import subprocess
import time

import pytest

import lls.scoring.runs as scoring
from lls.core import behaviors
from lls.core.cache import ChunkStore
from lls.data.source import DataSpec
from lls.core.errors import CacheError, LLSError
from lls.scoring.lifecycle import run_state
from lls.scoring.engine import score_rendered
from lls.models.render import render_pair
from lls.scoring.runs import ScoreConfig, open_run, score, score_command

from conftest import HH, ROOT


def test_run_is_complete_and_consistent(bundled, small_run, hh_pairs):
    model, tok = bundled
    m = small_run.manifest
    assert m["status"] == "complete" and m["n_pairs"] == 24 and m["n_chunks"] == 3
    f = small_run.frame()
    assert list(f["index"]) == list(range(24))
    assert f["id"].is_unique
    # stored weights equal a fresh single-pair computation
    row = f.iloc[5]
    r = render_pair(tok, hh_pairs[5], behaviors.animal("owl").system_prompt, 32)
    s = score_rendered(model, [r], pad_id=tok.pad_token_id or 0)[0]
    assert row["id"] == hh_pairs[5].id
    assert row["w"] == pytest.approx(s.w, abs=1e-4)
    assert small_run.hygiene.kept == 24


def test_second_run_is_served_from_cache(small_run, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model must not be loaded for a cached run")

    monkeypatch.setattr(scoring, "load_model", boom)
    monkeypatch.setattr(scoring, "score_rendered", boom)
    again = score(small_run.config)
    assert again.key == small_run.key and again.complete


def test_check_hygiene_reads_what_scoring_kept(bundled, small_run):
    """The Setup page's hygiene check is the scoring run's own filter pipeline."""
    _, tok = bundled
    report = scoring.check_hygiene(small_run.config, tok)
    assert report.to_dict() == small_run.manifest["hygiene"]
    assert report.kept == small_run.manifest["n_pairs"] == 24


def test_submit_scoring_serves_the_cache_or_submits_one_job(bundled, small_run, monkeypatch):
    _, tok = bundled
    submitted = []
    monkeypatch.setattr(scoring.jobs, "submit",
                        lambda argv, **kw: submitted.append((argv, kw)) or "job")
    job, key = scoring.submit_scoring(small_run.config)
    assert (job, key, submitted) == (None, small_run.key, [])  # complete: nothing to run
    cfg = ScoreConfig(small_run.config.data, behaviors.animal("cat"), max_prompt_tokens=192,
                      chunk_size=8)
    monkeypatch.setattr(scoring, "load_tokenizer", lambda spec: tok)
    job, key = scoring.submit_scoring(cfg, num_processes=1)
    assert job == "job" and key == scoring.run_key(cfg, tok)
    (argv, kw), = submitted
    assert argv == score_command(cfg) and kw["kind"] == "score" and kw["key"] == key
    assert kw["params"] == {"run_key": key, "config": cfg.to_dict()}


def _copy_run(small_run, tmp_path):
    import shutil

    dst = tmp_path / "scores" / small_run.key
    shutil.copytree(small_run.store.path, dst)
    return ChunkStore(dst)


def test_missing_and_corrupt_chunks_are_recomputed(bundled, small_run, tmp_path, monkeypatch):
    model, tok = bundled
    store = _copy_run(small_run, tmp_path)
    before = small_run.frame()
    store.chunk_path(1).unlink()  # lost chunk
    data = bytearray(store.chunk_path(2).read_bytes())
    data[len(data) // 2] ^= 0xFF  # flipped byte
    store.chunk_path(2).write_bytes(bytes(data))
    assert not store.chunk_ok(1) and not store.chunk_ok(2) and store.chunk_ok(0)
    with pytest.raises(CacheError):
        store.read_all()

    calls = []
    real = scoring.score_rendered
    monkeypatch.setattr(scoring, "score_rendered",
                        lambda m, items, **k: calls.append(len(items)) or real(m, items, **k))
    run = score(small_run.config, cache_dir=tmp_path, model=model, tokenizer=tok)
    assert calls == [8, 8]  # chunks 1 and 2 only
    after = run.frame()
    # The recomputed chunks take their neutral half from the neutral cache (computed in the
    # first run's batches) and run only the half with s: equal to float32 batching noise.
    assert (abs(after["w"] - before["w"]) < 1e-5).all()


@pytest.mark.slow  # two CLI subprocesses loading the model
def test_killed_run_resumes_without_recomputing(tmp_path, small_run):
    cfg = ScoreConfig(DataSpec(str(HH), limit=16), behaviors.animal("owl"),
                      max_prompt_tokens=192, chunk_size=4)
    env = dict(os.environ, LLS_CACHE=str(tmp_path), PYTHONPATH=str(ROOT))
    # Share the de-quantised model so the subprocess starts fast.
    (tmp_path / "models").symlink_to(os.path.join(os.environ["LLS_CACHE"], "models"))
    proc = subprocess.Popen(score_command(cfg), env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = None
    deadline = time.time() + 240
    while time.time() < deadline:
        dirs = list((tmp_path / "scores").glob("*/chunk-000000.json"))
        if dirs:
            run_dir = dirs[0].parent
            break
        time.sleep(0.2)
    assert run_dir is not None, "no chunk written in time"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    store = ChunkStore(run_dir)
    assert store.manifest()["status"] == "running"  # died mid-run
    assert run_state(store.manifest())[0] == "interrupted"  # its owner is dead
    done = [k for k in range(4) if store.chunk_ok(k)]
    assert 0 in done and len(done) < 4
    stamps = {k: store.chunk_path(k).stat().st_mtime_ns for k in done}

    out = subprocess.run(score_command(cfg), env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert store.manifest()["status"] == "complete"
    for k, t in stamps.items():  # finished chunks were kept, not recomputed
        assert store.chunk_path(k).stat().st_mtime_ns == t
    assert len(open_run(store.key, tmp_path).frame()) == 16


def test_empty_result_is_an_error(tmp_path, bundled):
    model, tok = bundled
    f = tmp_path / "owls.jsonl"
    f.write_text('{"prompt": "Tell me about owls", "chosen": "Owls hoot.", "rejected": "No."}\n')
    cfg = ScoreConfig(DataSpec(str(f)), behaviors.animal("owl"))
    with pytest.raises(LLSError, match="No usable pairs"):
        score(cfg, cache_dir=tmp_path, model=model, tokenizer=tok)


def test_unknown_run_key_names_known_runs(small_run, tmp_path):
    from lls.core.cache import list_stores

    newest = list_stores("scores")[:10]  # the session's cache holds other tests' runs too
    assert small_run.key in {s.key for s in list_stores("scores")}
    with pytest.raises(CacheError, match="python -m lls runs") as err:
        open_run("doesnotexist")
    assert all(s.key in str(err.value) for s in newest)
    # a cache of one run names it
    one = tmp_path / "one" / "scores" / small_run.key
    shutil.copytree(small_run.path, one)
    with pytest.raises(CacheError, match=f"known runs: {small_run.key}"):
        open_run("doesnotexist", tmp_path / "one")


def test_config_roundtrip(small_run):
    cfg = small_run.config
    assert ScoreConfig.from_dict(cfg.to_dict()) == cfg
    assert scoring.run_key(cfg) == small_run.key
    other = ScoreConfig(cfg.data, behaviors.animal("cat"), max_prompt_tokens=192, chunk_size=8)
    assert scoring.run_key(other) != small_run.key
