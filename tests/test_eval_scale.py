"""Scale-out of the behavior evaluation: `accelerate launch` processes give the single-process
answers and results files; part files of a killed multi-process run are reused; the meter runs
on rank 0 only; `launch_argv` / `eval_command` build the launch command."""

import json
import subprocess
import sys

import pytest

import test_scale as scale  # a module attribute: its tests are not collected again here
from lls.core import behaviors
from lls.core.distributed import device_count, launch_argv
from lls.evaluation.runs import EvalConfig, EvalModel, eval_command, evaluate, open_eval

from conftest import ROOT

PY = sys.executable


def test_launch_argv():
    argv = [PY, "-m", "lls", "--cache", "/c", "eval", "--config", "{}"]
    assert launch_argv(argv, 1, cpu=True) == argv
    assert launch_argv(argv, 2, cpu=True) == [
        PY, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
        "--num_machines", "1", "-m", "lls", "--cache", "/c", "eval", "--config", "{}"]
    assert launch_argv(argv, 8, cpu=False) == [
        PY, "-m", "accelerate.commands.launch", "--num_processes", "8", "--num_machines", "1",
        "-m", "lls", "--cache", "/c", "eval", "--config", "{}"]
    with pytest.raises(ValueError):
        launch_argv(argv, 0, cpu=True)
    with pytest.raises(ValueError):
        launch_argv([PY, "script.py"], 2, cpu=True)
    assert device_count() >= 1


def _cfg(**kw) -> EvalConfig:
    # meter read-outs kept small: 4 reference responses of 12 tokens, 2 probe questions
    return EvalConfig(behaviors.animal("owl"), prompts=("Name a bird.", "What is a good hobby?"),
                      samples=2, max_new_tokens=4, models=(EvalModel("base"), EvalModel("system")),
                      meter_k=4, meter_questions=2, meter_max_new_tokens=12, **kw)


def test_prompts_per_call_keeps_the_decoder_batch_full():
    from dataclasses import replace

    from lls.evaluation.config import prompts_per_call

    def per_call(samples, rows):
        return prompts_per_call(replace(_cfg(), samples=samples, batch_rows=rows))

    assert per_call(100, 100) == 2  # the defaults: 200 rows per call, 100 a step
    assert per_call(8, 100) == 25
    assert per_call(2, 100) == 32  # at most 32 prompts lost when a run is killed
    assert per_call(500, 100) == 1


def test_eval_command_launches_processes(tmp_path):
    cfg = _cfg()
    one = eval_command(cfg, tmp_path)
    assert one[:3] == [PY, "-m", "lls"] and one[3:6] == ["--cache", str(tmp_path), "eval"]
    two = eval_command(cfg, tmp_path, num_processes=2)
    assert two[:5] == [PY, "-m", "accelerate.commands.launch", "--num_processes", "2"]
    assert two[two.index("-m", 3):] == ["-m"] + one[2:]
    if device_count() == 1:  # CPU processes: accelerate's torchrun launcher (see launch_argv)
        assert "--multi_gpu" in two


def _answer_files(run) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run.path / "answers").glob("*.jsonl"))}


@pytest.mark.slow
def test_ranks_split_units_and_parts_resume(tmp_path, bundled, monkeypatch):
    """In-process (no launcher, so the barrier is a no-op): rank 1 of 2 writes only its part
    files; a later single-process run reuses them and samples only the rest; rank 1 + rank 0
    give the same files as one process; the meter runs once, on rank 0."""
    import lls.evaluation.runs as ev

    model, tok = bundled
    cfg = _cfg()
    meter_calls, sampled = [], []
    monkeypatch.setattr(ev, "run_meter", lambda c, host, **k: meter_calls.append(c) or {
        "settings": ev.meter_settings(c), "models": [{"label": "base"}]})
    real = ev.sample
    monkeypatch.setattr(ev, "sample", lambda *a, **k: sampled.append(
        (k["system_prompt"] is not None, *a[2])) or real(*a, **k))

    # rank 1 of 2 (a multi-process run killed after rank 1 finished): units 1 and 3
    killed = evaluate(cfg, cache_dir=tmp_path / "a", rank=1, world_size=2, model=model,
                      tokenizer=tok)
    parts = sorted(p.name for p in (killed.path / "parts").glob("*.jsonl"))
    assert len(parts) == 2 and all(p.endswith(".00001.jsonl") for p in parts)
    assert sampled == [(False, cfg.prompts[1]), (True, cfg.prompts[1])]
    assert not meter_calls and not killed.complete and not (killed.path / "answers").exists()

    # resumed by one process: only prompt 0 of each model is sampled, the parts are merged
    sampled.clear()
    resumed = evaluate(cfg, cache_dir=tmp_path / "a", model=model, tokenizer=tok)
    assert sampled == [(False, cfg.prompts[0]), (True, cfg.prompts[0])]
    assert resumed.complete and not (resumed.path / "parts").exists()
    assert len(meter_calls) == 1 and resumed.meter() is not None

    # rank 1 then rank 0 of 2 (rank 0 merges and finalises) and one process from scratch
    evaluate(cfg, cache_dir=tmp_path / "b", rank=1, world_size=2, model=model, tokenizer=tok)
    two = evaluate(cfg, cache_dir=tmp_path / "b", rank=0, world_size=2, model=model,
                   tokenizer=tok)
    sampled.clear()
    one = evaluate(cfg, cache_dir=tmp_path / "c", model=model, tokenizer=tok)
    # one process from scratch: both prompts of a model in one decoder call
    assert sampled == [(False, *cfg.prompts), (True, *cfg.prompts)]
    assert two.complete and two.manifest["processes"] == 2 and len(meter_calls) == 3
    assert _answer_files(two) == _answer_files(one) == _answer_files(resumed)
    assert len(one.answers()) == 8

    # rank 0 alone: the units of rank 1 are missing, so the run is partial and has no meter
    part = evaluate(cfg, cache_dir=tmp_path / "d", rank=0, world_size=2, model=model,
                    tokenizer=tok)
    assert part.manifest["status"] == "partial" and len(part.manifest["missing"]) == 2
    assert len(meter_calls) == 3


@pytest.mark.slow  # an accelerate launch of 2 processes + a single-process CLI run
def test_two_processes_give_the_single_process_results(tmp_path, bundled):
    cfg = _cfg()
    argv = [PY, "-m", "lls", "eval", "--config", json.dumps(cfg.to_dict())]
    multi, single = tmp_path / "multi", tmp_path / "single"
    for c in (multi, single):
        scale._share_models(c)
    launch = launch_argv(argv, 2, cpu=True)
    # a free port of our own: other launches may run at the same time on this machine
    at = launch.index("-m", 3)
    launch[at:at] = ["--mixed_precision", "no", "--dynamo_backend", "no",
                     "--main_process_port", "0"]
    out = subprocess.run(launch, env=scale._env(multi), cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 alone reports
    out = subprocess.run(argv, env=scale._env(single), cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    key = json.loads(out.stdout.strip().splitlines()[-1])["eval"]
    assert json.loads(lines[0])["eval"] == key
    a, b = open_eval(key, multi), open_eval(key, single)
    assert a.complete and b.complete and a.manifest["processes"] == 2
    assert not (a.path / "parts").exists()
    # the same answers, byte for byte: each (model, prompt) unit has its own seed
    files = _answer_files(a)
    assert len(files) == 2 and files == _answer_files(b)
    assert len(a.answers()) == 8
    # the meter: computed once (rank 0, after merging), the same read-outs as one process
    ra, rb = a.meter_rows(), b.meter_rows()
    assert [r["label"] for r in ra] == ["base", "base + system prompt"]
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in ra] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rb]
