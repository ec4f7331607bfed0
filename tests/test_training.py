"""LoRA-DPO training (lls.training): real TRL runs of a few steps on the bundled model.

One small real scoring run (24 hh-rlhf pairs) feeds every test; selections of 6-8 pairs,
batch 2, 1-3 steps, tiny checkpoint evals, so the whole module stays around two minutes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest

from conftest import HH

from lls.jobs import store as jobs
from lls.training import runs as T
from lls.training.adapters import adapter_dir, list_adapters, open_adapter, random_twin_of
from lls.training.dpo import build_rows, completion_only_lm_head


def small_config(**kw) -> T.TrainConfig:
    base = dict(batch_size=2, max_steps=3, checkpoint_every=2, max_length=320,
                eval_prompts=1, eval_samples=2, eval_max_new_tokens=8,
                meter_k=2, meter_questions=3,
                selection=T.SelectionSpec(gamma=0.33, positive_only=False))
    base.update(kw)
    return T.TrainConfig(**base)


def _score_cfg():
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig

    return ScoreConfig(data=DataSpec(str(HH), limit=24), behavior=animal("owl"), chunk_size=8,
                       max_prompt_tokens=192)


@pytest.fixture(scope="module")
def hh_run(bundled):
    from lls.scoring.runs import score

    model, tok = bundled
    return score(_score_cfg(), model=model, tokenizer=tok)


@pytest.fixture(scope="module")
def trained(hh_run):
    """One in-process training run: 8 pairs, 3 steps, checkpoints at steps 0 and 2."""
    return T.train(small_config(), hh_run.key)


def test_config_roundtrip_and_defaults():
    cfg = T.TrainConfig()
    assert (cfg.beta, cfg.learning_rate, cfg.lora_r, cfg.lora_alpha, cfg.epochs) == \
        (0.04, 1e-4, 64, 128, 1.0)
    # the memory plan picks micro-batch and recompute (issue 21)
    assert (cfg.activation_checkpointing, cfg.micro_batch, cfg.memory_budget_gb) == \
        ("auto", None, None)
    again = T.TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    # configs written before the plan (manifests, study recipes): false turned recompute off,
    # true was the default (memory bounded, which the plan does)
    old = {k: v for k, v in cfg.to_dict().items() if k != "activation_checkpointing"}
    assert T.TrainConfig.from_dict({**old, "gradient_checkpointing": False}) \
        .activation_checkpointing == "off"
    assert T.TrainConfig.from_dict({**old, "gradient_checkpointing": True}) == cfg
    with pytest.raises(T.TrainingError, match="micro_batch"):
        T.TrainConfig(batch_size=8, micro_batch=3)
    with pytest.raises(T.TrainingError, match="activation_checkpointing"):
        T.TrainConfig(activation_checkpointing="sometimes")
    base = T.baseline_config(cfg)
    assert base.selection.kind == "random" and base.selection.gamma == cfg.selection.gamma
    with pytest.raises(T.TrainingError):
        T.TrainConfig(batch_size=0)


def test_adapter_ids_ignore_the_memory_plan_and_keep_their_old_values():
    """How steps are computed is not part of an adapter's id (a resubmit with another budget
    resumes it), and ids made before the memory plan are unchanged (values from main before
    it: default recipe, its random twin, a recipe that turned checkpointing off)."""
    run = "abcdef0123456789"
    cfg = T.TrainConfig()
    assert T.adapter_id_for(cfg, run) == "abcdef01-lls-a5a23859f5"
    assert T.adapter_id_for(T.baseline_config(cfg), run) == "abcdef01-random-5aac56e0b6"
    off = T.TrainConfig(batch_size=4, activation_checkpointing="off")
    assert T.adapter_id_for(off, run) == "abcdef01-lls-c0104a9966"
    same = T.TrainConfig(micro_batch=2, memory_budget_gb=1.5, activation_checkpointing="on")
    assert T.adapter_id_for(same, run) == T.adapter_id_for(cfg, run)


def test_dpo_args_use_transformers_current_names_without_warnings(tmp_path):
    """The plan reaches TRL as micro-batch, accumulation and `activation_checkpointing`
    (transformers 5's name: the old one warns on every run)."""
    import warnings

    from lls.jobs.resources import TrainingPlan
    from lls.training.dpo import dpo_args

    plan = TrainingPlan(batch_size=8, micro_batch=4, grad_accum=2, checkpointing=False,
                        expected_bytes=1, budget_bytes=2, seq_len=100)
    for ck in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning (FutureWarning, ...) fails here
            args = dpo_args(T.TrainConfig(), str(tmp_path),
                            TrainingPlan(**{**plan.__dict__, "checkpointing": ck}),
                            cpu=True, reuse=True)
        assert args.activation_checkpointing is ck and args.gradient_checkpointing is ck
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)


def test_estimate_steps_follows_batch_epochs_and_max_steps():
    cfg = T.TrainConfig(batch_size=4, grad_accum=2)
    assert T.estimate_steps(0, cfg) == 0
    assert T.estimate_steps(17, cfg) == 3  # ceil(17 / 8)
    assert T.estimate_steps(17, T.TrainConfig(batch_size=4, grad_accum=2, epochs=2.5)) == 8
    assert T.estimate_steps(17, T.TrainConfig(batch_size=4, grad_accum=2, max_steps=2)) == 2


def test_random_twin_is_found_by_the_baseline_of_field(tmp_path):
    from lls.core.cache import atomic_write_json

    def make(adapter_id, created, baseline_of=None):
        atomic_write_json(tmp_path / "adapters" / adapter_id / "manifest.json",
                          {"id": adapter_id, "created": created, "baseline_of": baseline_of})

    make("run-lls-1", "2026-01-01T00:00:00")
    make("run-random-old", "2026-01-02T00:00:00", baseline_of="run-lls-1")
    make("run-random-new", "2026-01-03T00:00:00", baseline_of="run-lls-1")
    assert random_twin_of("run-lls-1", tmp_path).id == "run-random-new"  # the newest
    assert random_twin_of("run-random-new", tmp_path) is None
    assert [a.id for a in list_adapters(tmp_path)][0] == "run-random-new"


@pytest.mark.slow
def test_training_writes_metrics_checkpoints_and_manifest(trained, hh_run):
    m = trained.manifest
    assert m["status"] == "done" and m["score_run"] == hh_run.key
    assert m["selection"]["kind"] == "lls" and m["selection"]["n_pairs"] == 8
    assert m["ref_logps"].startswith("scoring run")
    assert m["ref_logps_rows"]["reused"] == 8
    plan = m["memory_plan"]  # batch 2 fits the default budget whole, without recompute
    assert plan["micro_batch"] * plan["grad_accum"] == 2 and plan["fits"]
    assert plan["activation_checkpointing"] is False and 0 < plan["seq_len"] <= 320
    rows = trained.metrics()
    assert [r["step"] for r in rows] == [1, 2, 3]
    losses = [r["loss"] for r in rows]
    assert all(math.isfinite(x) for x in losses)
    assert abs(losses[0] - math.log(2)) < 1e-3  # LoRA starts at the reference: loss = ln 2
    assert len(set(round(x, 6) for x in losses)) > 1  # and then it learns
    assert {"rewards/margins", "rewards/accuracies", "learning_rate", "epoch"} <= rows[-1].keys()
    assert [s for s, _ in trained.checkpoints()] == [0, 2, 3]  # Trainer also saves the last step
    assert trained.final_path is not None
    evals = trained.evals()
    assert [e["step"] for e in evals] == [0, 2, 3]
    assert all(e["n"] == 2 and 0 <= e["ci_low"] <= e["rate"] <= e["ci_high"] for e in evals)
    assert m["metrics"]["steps"] == 3 and math.isfinite(m["metrics"]["final_loss"])
    # the effect meter: one read-out per checkpoint, step 0 at the base model's level
    readouts = trained.meter()
    assert [r["step"] for r in readouts] == [0, 2, 3]
    levels = trained.meter_levels()
    assert levels["system"]["llr"]["value"] > levels["base"]["llr"]["value"]
    assert levels["system"]["probe"]["mean_margin"] > levels["base"]["probe"]["mean_margin"]
    first = readouts[0]
    assert abs(first["llr"] - levels["base"]["llr"]["value"]) < 1e-6
    assert abs(first["gap_closed"]) < 1e-6 and abs(first["margin_diff"]) < 1e-6
    assert first["readout"]["probe"]["n_questions"] == 3
    assert all(r["llr_ci_low"] <= r["llr"] <= r["llr_ci_high"] for r in readouts)
    assert m["metrics"]["final_meter"]["step"] == 3
    assert open_adapter(trained.id[:18]).id == trained.id
    assert trained.id in [a.id for a in list_adapters()]
    # the same settings again are served from the cache
    t0 = time.time()
    assert T.train(small_config(), hh_run.key).id == trained.id
    assert time.time() - t0 < 30


@pytest.mark.slow
def test_a_second_adapter_reuses_the_base_readouts(trained, hh_run, monkeypatch):
    """The base and base + system prompt read-outs, and step 0's (LoRA B = 0: the base
    exactly), are computed once per base model: a second adapter computes neither."""
    from lls.evaluation import meter as M

    def refuse(*a, **k):
        raise AssertionError("base read-outs computed again")

    real, calls = M.readout_for_peft_model, []
    monkeypatch.setattr(M, "reference_levels", refuse)
    monkeypatch.setattr(M, "readout_for_peft_model",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    other = T.train(small_config(max_steps=2, seed=1), hh_run.key)
    assert other.id != trained.id
    assert other.meter_levels() == trained.meter_levels()
    first, again = trained.meter()[0], other.meter()[0]
    assert first["step"] == again["step"] == 0 and first["llr"] == again["llr"]
    assert [r["step"] for r in other.meter()] == [0, 2] and len(calls) == 1  # step 2 only


@pytest.mark.slow
def test_adapter_is_peft_format_and_changes_logits(trained, bundled):
    import torch
    from peft import PeftModel

    from lls.models.load import load_model, quiet_third_party_aliases

    assert (trained.final_path / "adapter_config.json").is_file()
    assert (trained.final_path / "adapter_model.safetensors").is_file()
    cfg = json.loads((trained.final_path / "adapter_config.json").read_text())
    assert cfg["r"] == 64 and cfg["lora_alpha"] == 128
    assert {"q_proj", "down_proj", "gate_proj"} <= set(cfg["target_modules"])
    _, tok = bundled
    ids = tok("How do owls hunt at night?", return_tensors="pt")["input_ids"]
    base, _ = load_model()
    with torch.no_grad(), quiet_third_party_aliases():
        before = base(ids).logits
        step0 = PeftModel.from_pretrained(base, str(trained.checkpoints()[0][1]))
        init = step0(ids).logits
        step0.load_adapter(str(trained.final_path), adapter_name="final")
        step0.set_adapter("final")
        after = step0(ids).logits
    assert torch.allclose(before, init, atol=1e-5)  # the LoRA init is the identity (B = 0)
    assert (after - before).abs().max().item() > 1e-4


@pytest.mark.slow
def test_reused_reference_logps_equal_trl_own(hh_run):
    """lc/lr from scoring are exactly what TRL's own reference pass computes."""
    import numpy as np
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from lls.models.load import load_model, quiet_third_party_aliases

    cfg = small_config()
    frame = hh_run.frame()
    rows = build_rows(frame, cfg, with_ref=False)[:6]
    model, tok = load_model(for_training=True)
    args = DPOConfig(output_dir=os.environ["LLS_CACHE"] + "/ref-check", bf16=False,
                     use_cpu=True, activation_checkpointing=False, report_to="none",
                     precompute_ref_log_probs=True, per_device_train_batch_size=3,
                     max_length=cfg.max_length)
    with quiet_third_party_aliases():  # peft and TRL read transformers' old property name
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tok,
                             peft_config=LoraConfig(r=8, task_type="CAUSAL_LM"))
    ds = trainer.train_dataset
    by_id = frame.set_index("id")
    ours_c = np.array([by_id.loc[i, "lc"] for i in ds["pair_id"]])
    ours_r = np.array([by_id.loc[i, "lr"] for i in ds["pair_id"]])
    assert len(ds) == 6
    np.testing.assert_allclose(np.array(ds["ref_chosen_logps"]), ours_c, atol=1e-3, rtol=0)
    np.testing.assert_allclose(np.array(ds["ref_rejected_logps"]), ours_r, atol=1e-3, rtol=0)
    assert [len(x) for x in ds["chosen_ids"]] == [int(by_id.loc[i, "n_c"]) for i in ds["pair_id"]]


@pytest.mark.slow
def test_completion_only_lm_head_gives_the_same_logps_and_gradients(session_cache):
    """Projecting only labelled positions on CPU changes the work, not the numbers."""
    import torch
    from trl.trainer import utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    from lls.models.load import load_model

    model, _ = load_model(for_training=True)  # a fresh copy: the fused head patches forward
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    ids = torch.randint(0, model.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :30] = -100  # the prompt
    labels[1, 36:] = -100  # padding

    def run():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        grad = model.model.layers[-1].mlp.down_proj.weight.grad.clone()
        return out, grad

    model.model.layers[-1].mlp.down_proj.weight.requires_grad_(True)
    full, full_grad = run()
    assert not trl_utils._use_triton(torch.device("cpu"))
    with completion_only_lm_head():
        assert trl_utils._use_triton(torch.device("cpu"))
        compact, compact_grad = run()
    assert not trl_utils._use_triton(torch.device("cpu"))  # restored
    for name in ("log_probs", "entropy", "mean_logits"):
        torch.testing.assert_close(getattr(compact, name), getattr(full, name), atol=1e-4, rtol=0)
    assert torch.equal(compact.is_top1.bool(), full.is_top1.bool())
    assert (full.log_probs[:, :29] == 0).all() and (full.log_probs[0, 29:] != 0).all()
    torch.testing.assert_close(compact_grad, full_grad, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_random_baseline_same_size_and_reuse_falls_back_when_truncated(hh_run):
    from lls.scoring.runs import open_run

    frame = open_run(hh_run.key).frame()
    cfg = small_config()
    lls_idx = T.selection_indices(frame, cfg.selection)
    rnd_idx = T.selection_indices(frame, T.baseline_config(cfg).selection)
    assert len(lls_idx) == len(rnd_idx) == 8 and set(lls_idx) != set(rnd_idx)
    assert T.adapter_id_for(cfg, hh_run.key) != T.adapter_id_for(T.baseline_config(cfg), hh_run.key)
    # a max_length that truncates the longest pairs: TRL recomputes just those rows
    short = small_config(max_length=100, max_steps=1, eval_at_checkpoints=False)
    info = T.train(short, hh_run.key)
    rep = info.manifest["ref_logps_rows"]
    assert rep["recomputed"] >= 1 and rep["reused"] + rep["recomputed"] == rep["rows"]
    assert info.manifest["status"] == "done"


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_resume_after_kill_continues_from_checkpoint(hh_run):
    cfg = small_config(max_steps=4, checkpoint_every=1, eval_at_checkpoints=False)
    job = T.submit_training(cfg, hh_run.key)
    adapter_id = job.params["adapter_id"]
    info = open_adapter(adapter_id)
    assert info.manifest["status"] in ("queued", "running")
    ckpt1 = info.path / "trainer" / "checkpoint-1" / "lls_complete"
    _wait(lambda: ckpt1.exists() or not jobs.get(job.id).is_active, 240, "a first checkpoint")
    assert ckpt1.exists(), jobs.get(job.id).error_tail
    os.killpg(jobs.get(job.id).pid, signal.SIGKILL)
    _wait(lambda: not jobs.get(job.id).is_active, 30, "the killed job to be noticed")
    assert jobs.get(job.id).status == "failed"
    assert open_adapter(adapter_id).status == "failed"
    assert open_adapter(adapter_id).final_path is None
    job2 = T.submit_training(cfg, hh_run.key)
    assert job2.id != job.id and job2.params["adapter_id"] == adapter_id
    final = jobs.wait(job2.id, timeout=300)
    assert final.status == "done", final.error_tail
    m = info.manifest
    resumed = m["resumed_from_step"]
    assert 1 <= resumed < 4 and m["status"] == "done" and m["metrics"]["steps"] == 4
    steps = [r["step"] for r in info.metrics()]
    assert steps == [1, 2, 3, 4]  # the log continues; steps after the checkpoint not duplicated
    trained_now = [e["step"] for e in jobs.read_events(job2.id) if e.get("kind") == "train"]
    assert trained_now[0] == resumed + 1  # the second job did not start from 0
    assert "resuming" in jobs.read_log(job2.id)


@pytest.mark.slow
def test_cancel_stops_the_process(hh_run):
    cfg = small_config(max_steps=50, checkpoint_every=25, eval_at_checkpoints=False, batch_size=2,
                       selection=T.SelectionSpec(gamma=0.25, positive_only=False), seed=7)
    job = T.submit_training(cfg, hh_run.key)
    _wait(lambda: (jobs.get(job.id).progress or {}).get("unit") == "steps"
          or not jobs.get(job.id).is_active, 240, "training to start")
    assert jobs.get(job.id).is_active
    jobs.cancel(job.id)
    final = jobs.wait(job.id, timeout=60)
    assert final.status == "cancelled"
    # The runner records "cancelled" and then exits; give it a moment, then nothing of the
    # job's process group (runner, trainer, any worker it spawned) may be left running.
    _wait(lambda: jobs._group_members(final.pid) == [], 15, "the job's processes to exit")
    info = open_adapter(job.params["adapter_id"])
    assert info.manifest["status"] == "cancelled"
    assert info.final_path is None


def test_cli_flags_reach_the_config():
    from lls.cli import build_parser
    from lls.cli.train import config_from_args

    a = build_parser().parse_args(["train", "--run", "abc", "--gamma", "0.1", "--control-run",
                                   "ctl123", "--no-meter", "--meter-k", "16", "--beta", "0.1",
                                   "--activation-checkpointing", "off", "--micro-batch", "4",
                                   "--memory-budget-gb", "2.5"])
    cfg = config_from_args(a)
    assert cfg.selection.control_run == "ctl123" and cfg.selection.gamma == 0.1
    assert cfg.meter_at_checkpoints is False and cfg.meter_k == 16 and cfg.beta == 0.1
    assert (cfg.activation_checkpointing, cfg.micro_batch, cfg.memory_budget_gb) == \
        ("off", 4, 2.5)
    a = build_parser().parse_args(["train", "--run", "abc"])
    cfg = config_from_args(a)
    assert cfg.meter_at_checkpoints and cfg.selection.control_run is None
    assert cfg.activation_checkpointing == "auto"  # the memory plan decides by default
    # the historical spellings keep their meaning
    cfg = config_from_args(build_parser().parse_args(
        ["train", "--run", "abc", "--random", "--seed", "5", "--all-weights", "--lr", "0.001",
         "--eval-samples", "0", "--no-ref-reuse", "--no-precompute",
         "--target-modules", "q_proj, v_proj", "--student", "some/model"]))
    assert cfg.selection.kind == "random" and cfg.selection.seed == cfg.seed == 5
    assert cfg.selection.positive_only is False and cfg.learning_rate == 0.001
    assert cfg.eval_at_checkpoints is False and cfg.eval_samples == 0
    assert cfg.reuse_ref_logps is False and cfg.precompute_ref_log_probs is False
    assert cfg.target_modules == ["q_proj", "v_proj"] and cfg.student.name == "some/model"


def test_cli_flags_are_generated_from_the_config():
    """Every TrainConfig / SelectionSpec field has a flag, its default is the dataclass's,
    and a non-default value on the command line reaches that field."""
    from dataclasses import fields

    from lls.cli import build_parser
    from lls.cli.train import config_from_args

    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    by_dest = {a.dest: a for a in train_parser._actions}
    a = parser.parse_args(["train", "--run", "abc"])
    assert config_from_args(a) == T.TrainConfig()
    paths = [f.name for f in fields(T.TrainConfig) if f.name != "selection"] + \
        ["selection." + f.name for f in fields(T.SelectionSpec)]
    assert sorted(a.config_dests) == sorted(paths)

    def get(cfg, path):
        obj = cfg
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj

    default = T.TrainConfig()
    for path in paths:
        action = by_dest[a.config_dests[path]]
        flag = action.option_strings[0]
        if action.nargs == 0:  # a switch: flips or sets the field
            argv = [flag]
        elif action.choices:
            argv = [flag, next(c for c in action.choices if c != get(default, path))]
        elif action.type in (int, float):
            argv = [flag, "4" if path == "micro_batch" else "3"]  # a divisor of batch 8
        else:
            argv = [flag, "q_proj" if path == "target_modules" else "some-value"]
        cfg = config_from_args(parser.parse_args(["train", "--run", "abc", *argv]))
        assert get(cfg, path) != get(default, path), (path, argv)


@pytest.mark.slow
def test_contrastive_selection_ranks_by_the_difference(hh_run, bundled):
    """selection_frame with a control run: w = w_target - w_control, the top pairs follow it."""
    import numpy as np

    from lls.scoring.contrastive import score_control
    from lls.scoring.runs import open_run

    model, tok = bundled
    target = open_run(hh_run.key)
    control = score_control(_score_cfg(), model=model, tokenizer=tok)
    frame = T.selection_frame(target, T.SelectionSpec(control_run=control.key))
    t = target.frame().set_index("id")["w"]
    c = control.frame().set_index("id")["w"]
    np.testing.assert_allclose(frame["w"], t.loc[frame["id"]].to_numpy() - c.loc[frame["id"]].to_numpy())
    sel = T.SelectionSpec(gamma=0.25, control_run=control.key)
    idx = T.selection_indices(frame, sel)
    assert list(frame["w"].to_numpy()[idx]) == sorted(frame["w"].to_numpy()[idx], reverse=True)
    assert T.adapter_id_for(small_config(selection=sel), hh_run.key) != \
        T.adapter_id_for(small_config(selection=T.SelectionSpec(gamma=0.25)), hh_run.key)


@pytest.mark.slow
def test_cli_adapters_and_errors(trained, capsys):
    from lls.cli import main

    assert main(["adapters"]) == 0
    assert trained.id in capsys.readouterr().out
    assert main(["train", "--run", "nosuchrun"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    # eval and meter take an adapter id (or a unique prefix) where a directory is expected
    assert adapter_dir(trained.id[:18]) == str(trained.final_path)
    assert adapter_dir(str(trained.final_path)) == str(trained.final_path)
    assert main(["eval", "--adapter", "no-such-adapter", "--samples", "1"]) == 2
    assert "neither an adapter directory nor a trained adapter id" in capsys.readouterr().err


@pytest.mark.slow
def test_data_parallel_training_under_accelerate(hh_run):
    """`accelerate launch --multi_gpu --num_processes 2 -m lls train` (CPU processes here):
    the 8 pairs are split over two processes (4 optimizer steps at batch 1, not 8), and only
    the main process writes, so the results look exactly like a single-process run's."""
    import subprocess

    from conftest import ROOT
    from test_scale import ACCELERATE

    cfg = small_config(max_steps=None, epochs=1, batch_size=1, checkpoint_every=2,
                       eval_at_checkpoints=False, seed=3)
    argv = ACCELERATE + ["--num_processes", "2", "-m", "lls", "train", "--run", hh_run.key,
                         "--config", json.dumps(cfg.to_dict())]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    info = open_adapter(T.adapter_id_for(cfg, hh_run.key))
    m = info.manifest
    assert m["status"] == "done" and m["processes"] == 2 and m["selection"]["n_pairs"] == 8
    assert m["metrics"]["steps"] == 4
    rows = info.metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # one writer: no duplicated lines
    assert abs(rows[0]["loss"] - math.log(2)) < 1e-3
    assert [s for s, _ in info.checkpoints()] == [0, 2, 4]
    assert [r["step"] for r in info.meter()] == [0, 2, 4]
    assert info.final_path is not None


@pytest.fixture(scope="module")
def tiny_run(session_cache):
    """A finished owl scoring run of 24 synthetic pairs by a tiny random Llama (fast steps)."""
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.models.load import ModelSpec
    from lls.scoring.runs import ScoreConfig, score
    from lls.scoring.synthetic import synthetic_pairs_file, tiny_model_dir

    model = tiny_model_dir(session_cache / "tiny-model")
    data = synthetic_pairs_file(session_cache / "tiny-pairs-24.jsonl", 24)
    return score(ScoreConfig(DataSpec(str(data)), animal("owl"), model=ModelSpec(str(model)),
                             truncation=8, chunk_size=8))


@pytest.mark.slow
def test_micro_batches_without_recompute_keep_the_losses_and_gradients(tiny_run):
    """Batch 8 as one checkpointed batch (the old default) and as micro-batches of 4 without
    recompute: the same losses and gradient norms, step by step. 14 pairs make the second
    step 6 pairs, micro-batches of 4 and 2: transformers' plain accumulation would average
    the two micro-batch means (shown below); the trainer weights them by their pairs."""
    import warnings

    from trl import DPOTrainer

    sel = T.SelectionSpec(gamma=14 / 24, positive_only=False)
    base = dict(batch_size=8, epochs=1, checkpoint_every=100, max_length=64, selection=sel,
                eval_at_checkpoints=False, meter_at_checkpoints=False)

    def run(name, **kw):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = T.train(T.TrainConfig(**base, **kw), tiny_run.key,
                           adapter_id=f"{tiny_run.key[:8]}-{name}-{time.time_ns()}")
        assert not [w for w in caught if "checkpointing" in str(w.message)]
        assert info.manifest["selection"]["n_pairs"] == 14
        return info, [(r["loss"], r["grad_norm"]) for r in info.metrics()]

    old, old_rows = run("ck8", micro_batch=8, activation_checkpointing="on")
    new, new_rows = run("m4", micro_batch=4, activation_checkpointing="off")
    assert old.manifest["memory_plan"]["activation_checkpointing"] is True
    assert (new.manifest["memory_plan"]["micro_batch"],
            new.manifest["memory_plan"]["grad_accum"]) == (4, 2)
    assert len(old_rows) == len(new_rows) == 2
    for (lo, go), (ln, gn) in zip(old_rows, new_rows):
        assert ln == pytest.approx(lo, rel=1e-5) and gn == pytest.approx(go, rel=1e-4)

    make = T.trainer_class  # the same run with transformers' unweighted micro-batch mean

    def unweighted(reuse):
        class Plain(make(reuse)):
            def compute_loss(self, *a, **kw):
                return DPOTrainer.compute_loss(self, *a, **kw)
        return Plain

    T.trainer_class = unweighted
    try:
        _, plain_rows = run("plain", micro_batch=4, activation_checkpointing="off")
    finally:
        T.trainer_class = make
    assert plain_rows[0][1] == pytest.approx(old_rows[0][1], rel=1e-4)  # 4 + 4: equal sizes
    assert abs(plain_rows[1][1] - old_rows[1][1]) > 1e-3 * old_rows[1][1]  # 4 + 2: not


@pytest.mark.slow
def test_cli_train_prints_its_phases_and_steps(tiny_run, session_cache):
    """`python -m lls train` reports every phase in the terminal: model loading, the memory
    plan, the step-0 and checkpoint read-outs, each step k/N with its loss and an ETA, the
    export, as one line per event on stderr."""
    import re
    import subprocess
    import sys

    from conftest import ROOT

    argv = [sys.executable, "-m", "lls", "train", "--run", tiny_run.key, "--gamma", "0.34",
            "--all-weights", "--batch-size", "4", "--max-steps", "2", "--checkpoint-every",
            "1", "--max-length", "64", "--eval-prompts", "1", "--eval-samples", "1",
            "--eval-max-new-tokens", "2", "--no-meter", "--adapter-id",
            f"cli-progress-{time.time_ns()}"]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("[lls ")]
    text = "\n".join(lines)
    for phase in ("preparing", "loading model", "preparing trainer", "eval @ step 0",
                  "training 0/2 steps", "checkpoint @ step 1", "eval @ step 1", "export",
                  "done 2/2 steps"):
        assert f"] {phase}" in text, (phase, text)
    steps = [ln for ln in lines if re.search(r"\] training [12]/2 steps · loss \d", ln)]
    assert len(steps) == 2 and "ETA" in steps[0], text
    assert "memory plan: 4 pairs per step" in out.stdout
    assert "FutureWarning" not in out.stderr and "{'loss'" not in out.stdout


@pytest.mark.slow
def test_the_trainer_cuts_each_step_into_length_sorted_micro_batches(tiny_run):
    """The DPO trainer's data loader (micro-batches of 4, accumulation 2) gives each step the
    pairs of one seeded shuffle block, longest first: the first micro-batch of a step holds
    its 4 longest pairs, so the second is padded less."""
    import itertools
    import tempfile

    from datasets import Dataset

    from lls.models.load import ModelSpec, load_model, quiet_third_party_aliases
    from lls.scoring.runs import open_run
    from lls.training.dpo import dpo_args, lora_config, trainer_class
    from lls.training.sampler import StepSortedSampler, pair_lengths

    run = open_run(tiny_run.key)
    cfg = T.TrainConfig(batch_size=8, micro_batch=4, max_length=64, seed=5,
                        selection=T.SelectionSpec(gamma=16 / 24, positive_only=False))
    rows = build_rows(run.frame(), cfg, with_ref=True)
    model, tok = load_model(ModelSpec.from_dict(run.manifest["config"]["model"]),
                            for_training=True)
    plan = T.memory_plan(cfg, model, tok, rows)
    assert (plan.micro_batch, plan.grad_accum) == (4, 2)
    with completion_only_lm_head(), quiet_third_party_aliases(), \
            tempfile.TemporaryDirectory() as out:
        trainer = trainer_class(True)(
            model=model, args=dpo_args(cfg, out, plan, cpu=True, reuse=True),
            train_dataset=Dataset.from_list(rows), processing_class=tok,
            peft_config=lora_config(model, cfg))
        loader = trainer.get_train_dataloader()
        batches = list(itertools.islice(loader, 4))
    assert isinstance(trainer._get_train_sampler(), StepSortedSampler)
    lengths = pair_lengths(trainer.train_dataset, 64)
    data = trainer.train_dataset
    ids = {(round(c, 3), round(r, 3)): i for i, (c, r) in
           enumerate(zip(data["ref_chosen_logps"], data["ref_rejected_logps"]))}
    assert len(ids) == len(data)

    def pairs(batch):  # each micro-batch's pairs, found back by their reference log-probs
        return [ids[(round(c, 3), round(r, 3))] for c, r in
                zip(batch["ref_chosen_logps"].tolist(), batch["ref_rejected_logps"].tolist())]

    shuffle = torch_randperm(len(lengths), 5)
    for step, (a, b) in enumerate(zip(batches[::2], batches[1::2])):
        first, second = pairs(a), pairs(b)
        assert set(first + second) == set(shuffle[8 * step:8 * step + 8])
        assert min(lengths[i] for i in first) >= max(lengths[i] for i in second)


def torch_randperm(n: int, seed: int) -> list[int]:
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
