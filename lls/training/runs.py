"""The training stage: LoRA + DPO of a student on a selection, resumable, in the background.

`train(cfg, run_key)` trains a `peft` LoRA adapter with TRL's `DPOTrainer` (`lls.training.dpo`) on the
LLS (or a same-size random) selection of a finished scoring run and writes everything under
`<cache>/adapters/<adapter_id>/` (the layout is in `lls.training.adapters`); `lls.training.callback`
writes checkpoints, evals and meter read-outs as it goes. The recipe is
`lls.training.config.TrainConfig`.

`submit_training` runs `python -m lls train ...` as a job of `lls.jobs`; a killed run
resubmitted with the same config (same adapter id) resumes from its last checkpoint.
`submit_baseline` trains the same recipe on a same-size random subset.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from .. import jobs
from ..core.behaviors import Behavior
from ..core.cache import atomic_write_json, fingerprint, read_jsonl
from ..core.errors import LLSError
from ..core.distributed import barrier, launch_argv, process_info
from ..scoring.contrastive import as_ranked, contrastive_frame, open_controls
from .adapters import AdapterInfo, adapters_root, export_adapter, open_adapter
from .dpo import (build_rows, completion_only_lm_head, dpo_args, drop_long_prompts,
                  longest_sequence, lora_config, reuse_check, trainer_class)
from ..jobs.resources import ModelShape, TrainingPlan, bound_malloc, plan_for
from ..jobs.store import ACTIVE
from ..models.load import (ModelSpec, load_model, load_tokenizer, pinned,
                           quiet_third_party_aliases, resolve_device)
from ..scoring.runs import ScoreRun, open_run
from .cancel import TrainingCancelled, sigterm_cancels, stop_requested
from .config import (SelectionSpec, TrainConfig, TrainingError, baseline_config,
                           estimate_steps, selection_count, selection_indices)

TRAINING_VERSION = "1"
# Project only completion tokens through the LM head on CPU (see lls.training.dpo.completion_only_lm_head);
# benchmarks/train_throughput.py turns it off to measure what it saves.
COMPACT_LM_HEAD = True
LOG_FILES = ("metrics.jsonl", "evals.jsonl", "meter.jsonl")

__all__ = ["TrainConfig", "SelectionSpec", "TrainingError", "TrainingCancelled", "baseline_config",
           "estimate_steps", "selection_indices", "selection_count", "adapter_id_for", "memory_plan",
           "selection_frame", "student_spec", "train", "train_command", "submit_training",
           "submit_baseline"]


def adapter_id_for(cfg: TrainConfig, run_key: str, baseline_of: str | None = None) -> str:
    """The deterministic adapter id of (recipe, scoring run): the same id resumes."""
    key = fingerprint(TRAINING_VERSION, run_key, cfg.identity(), baseline_of)
    return f"{run_key[:8]}-{cfg.selection.kind}-{key[:10]}"


def student_spec(cfg: TrainConfig, run: ScoreRun) -> ModelSpec:
    """The model `cfg` trains on `run`, its precision fixed: `cfg.dtype` when given, else the
    named student's own, else the run's teacher in the run's precision."""
    spec = cfg.student or run.teacher
    if cfg.dtype is not None:
        spec = replace(spec, dtype=None if cfg.dtype == "auto" else cfg.dtype)
    return pinned(spec)


def selection_frame(run: ScoreRun, sel: SelectionSpec, cache_dir: Path | None = None):
    """The frame a selection ranks: the run's own, or, with `sel.control_run`, the
    contrastive frame whose `w` is w_target - w_control (`lls.scoring.contrastive`)."""
    if not sel.control_run:
        return run.frame()
    try:
        controls = open_controls(sel.control_run, cache_dir)
    except LLSError as e:
        raise TrainingError(str(e)) from None
    return as_ranked(contrastive_frame(run, controls), "w_contrastive")


# --------------------------------------------------------------------------- training

def train(cfg: TrainConfig, score_run_key: str, *, cache_dir: Path | None = None,
          adapter_id: str | None = None, baseline_of: str | None = None) -> AdapterInfo:
    """Train a LoRA-DPO adapter on the selection of a finished scoring run; resumes.

    Runs in-process (the CLI and background jobs call it). An adapter id that already has
    Trainer checkpoints continues from the last one; a finished adapter is returned as is.
    `baseline_of`: this adapter is the random baseline of that adapter id.
    """
    bound_malloc()  # freed activations go back to the OS instead of staying resident
    run = open_run(score_run_key, cache_dir)
    if not run.complete:
        raise TrainingError(f"Scoring run {run.key} is {run.manifest.get('status', '?')}, not "
                            "complete: finish scoring first (resubmit the same scoring job).")
    adapter_id = adapter_id or adapter_id_for(cfg, run.key, baseline_of)
    adapter = AdapterInfo(adapter_id, adapters_root(cache_dir) / adapter_id)
    old = adapter.manifest
    if old.get("status") == "done" and adapter.final_path is not None:
        print(f"[lls.training] adapter {adapter_id} is already trained: {adapter.final_path}")
        return adapter

    adapter.path.mkdir(parents=True, exist_ok=True)
    is_main = process_info().is_main
    try:
        with sigterm_cancels(os.environ.get(jobs.ENV_JOB_DIR) is not None):
            return _train(cfg, run, adapter, old, baseline_of, cache_dir)
    except (TrainingCancelled, KeyboardInterrupt):
        if is_main:
            _update_manifest(adapter, status="cancelled", updated=_now())
        raise TrainingCancelled(f"Training of {adapter_id} cancelled; checkpoints are kept in "
                                f"{adapter.path} and resubmitting the same settings resumes.")
    except BaseException as e:
        if is_main:
            _update_manifest(adapter, status="failed", error=f"{e.__class__.__name__}: {e}",
                             updated=_now())
        raise


def _train(cfg: TrainConfig, run: ScoreRun, adapter: AdapterInfo, old: dict,
           baseline_of: str | None, cache_dir: Path | None) -> AdapterInfo:
    """The steps of one run: rows, manifest, resume point, fit, final export and metrics."""
    # The callback imports torch + transformers: loaded only when a run starts.
    from .callback import LLSCallback

    pinfo = process_info()
    jobs.report_phase("preparing", f"adapter {adapter.id}: selection and tokenizer")
    teacher = run.teacher
    student = student_spec(cfg, run)
    behavior = Behavior.from_dict(run.manifest["config"]["behavior"])
    trait = run.config.teacher  # what carries the trait (None: the behavior's system prompt)
    tokenizer = load_tokenizer(student)
    rows, why_not = _training_rows(cfg, run, student, tokenizer, cache_dir)
    manifest = _start_manifest(cfg, run, adapter, old, baseline_of, student, teacher, behavior,
                               rows, why_not)
    manifest["trait_teacher"] = trait.to_dict() if trait is not None else None
    if pinfo.world_size > 1:
        manifest["processes"] = pinfo.world_size
    resume = _resume_point(adapter, manifest, pinfo.is_main)

    callback = LLSCallback(adapter, tokenizer, behavior, cfg, is_main=pinfo.is_main,
                           teacher=trait)
    trainer, result, wall = _fit(cfg, student, tokenizer, rows, why_not is None, adapter,
                                 manifest, callback, resume, pinfo.is_main)
    if stop_requested():
        raise TrainingCancelled("cancelled")
    if pinfo.is_main:  # the main process exports and records the result
        _finish(adapter, trainer, callback, manifest, rows, result, wall)
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return adapter


def _training_rows(cfg: TrainConfig, run: ScoreRun, student: ModelSpec, tokenizer,
                   cache_dir: Path | None) -> tuple[list[dict], str | None]:
    """The TRL rows of the selection and why the scoring log-probs are not reused (None: they are)."""
    frame = selection_frame(run, cfg.selection, cache_dir)
    if selection_count(frame, cfg.selection) == 0:
        raise TrainingError(f"The selection of run {run.key} is empty "
                            f"({cfg.selection.to_dict()}): raise gamma or lower the threshold.")
    why_not = reuse_check(run.manifest, student, tokenizer, cfg)
    rows = drop_long_prompts(build_rows(frame, cfg, with_ref=why_not is None), tokenizer,
                             cfg.max_prompt_length)
    if not rows:
        raise TrainingError("Every selected prompt is longer than max_prompt_length.")
    if why_not is not None:
        print(f"[lls.training] reference log-probs not reused: {why_not}; computed by "
              f"{_ref_source(cfg, why_not)}", flush=True)
    return rows, why_not


def _ref_source(cfg: TrainConfig, why_not: str | None) -> str:
    if why_not is None:
        return "scoring run (teacher log-probs without the system prompt)"
    return "TRL, once before training" if cfg.precompute_ref_log_probs else "TRL, every step"


def _start_manifest(cfg, run, adapter, old, baseline_of, student, teacher, behavior, rows,
                    why_not) -> dict:
    job_dir = os.environ.get(jobs.ENV_JOB_DIR)
    return {
        "id": adapter.id, "kind": "adapter", "status": "running",
        "base_model": student.to_dict(), "student": student.to_dict(), "teacher": teacher.to_dict(),
        "score_run": run.key, "behavior": behavior.to_dict(),
        "selection": {**cfg.selection.to_dict(), "n_pairs": len(rows)},
        "train": cfg.to_dict(), "metrics": old.get("metrics", {}),
        "created": old.get("created", _now()), "updated": _now(),
        "job_id": Path(job_dir).name if job_dir else old.get("job_id"),
        "baseline_of": baseline_of if baseline_of is not None else old.get("baseline_of"),
        "ref_logps": _ref_source(cfg, why_not),
    }


def _resume_point(adapter: AdapterInfo, manifest: dict, is_main: bool) -> Path | None:
    """The last complete Trainer checkpoint (None: a fresh start); the main process writes
    the manifest and tidies the adapter directory for it."""
    trainer_dir = adapter.path / "trainer"
    done = _complete_checkpoints(trainer_dir) if trainer_dir.is_dir() else []
    # Every rank decides where to resume from before the main process tidies up.
    barrier()
    resume = None
    if done:
        manifest["resumed_from_step"], resume = done[-1]
    if is_main:
        atomic_write_json(adapter.path / "manifest.json", manifest)
        _prepare_adapter_dir(adapter, trainer_dir, manifest, resume)
    barrier()
    return resume


def memory_plan(cfg: TrainConfig, model, tokenizer, rows: list[dict]) -> TrainingPlan:
    """How the steps of `cfg` run on this machine (`lls.jobs.resources.plan_training`): the
    micro-batch and accumulation that keep `cfg.batch_size` pairs per step, with activation
    checkpointing only where a micro-batch of 1 would not fit the memory budget."""
    shape = ModelShape.from_config(model.config.to_dict(),
                                   precision=getattr(model, "lls_precision", "float32"))
    return plan_for(shape, cfg, seq_len=longest_sequence(rows, tokenizer, cfg.max_length))


def _fit(cfg, student, tokenizer, rows, reuse, adapter, manifest, callback, resume, is_main):
    """Build TRL's trainer and train; returns (trainer, TrainOutput, wall seconds)."""
    from datasets import Dataset  # heavy: imported when a run starts
    from transformers import PrinterCallback

    jobs.report_phase("loading model", student.label)
    model, _ = load_model(student, for_training=True)
    plan = memory_plan(cfg, model, tokenizer, rows)
    manifest["memory_plan"] = plan.to_dict()
    if is_main:
        print(f"[lls.training] memory plan: {plan.describe()}", flush=True)
        atomic_write_json(adapter.path / "manifest.json", manifest)
    args = dpo_args(cfg, str(adapter.path / "trainer"), plan,
                    cpu=resolve_device(student) == "cpu", reuse=reuse)
    jobs.report_phase("preparing trainer", f"{len(rows)} pairs: tokenizing, reference "
                                           "log-probs, LoRA")
    with completion_only_lm_head() if COMPACT_LM_HEAD else contextlib.nullcontext(), \
            quiet_third_party_aliases():
        trainer = trainer_class(reuse)(
            model=model, args=args, train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer, peft_config=lora_config(model, cfg),
            callbacks=[callback])
        trainer.remove_callback(PrinterCallback)  # the callback reports each step
        if trainer.lls_ref_report and is_main:
            manifest["ref_logps_rows"] = trainer.lls_ref_report
            atomic_write_json(adapter.path / "manifest.json", manifest)
        t0 = time.time()
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return trainer, result, time.time() - t0


def _finish(adapter, trainer, callback, manifest, rows, result, wall) -> None:
    """Export final/, measure it if the last checkpoint did not, record the metrics."""
    state = trainer.state
    final = adapter.path / "final"
    jobs.report_phase("export", f"final adapter at step {state.global_step}")
    export_adapter(trainer.model, final)
    evals = adapter.evals()
    if not evals or evals[-1].get("step") != state.global_step:
        callback.evaluate(trainer.model, state.global_step, final)
    readouts = adapter.meter()
    if not readouts or readouts[-1].get("step") != state.global_step:
        callback.meter(trainer.model, state.global_step, final)
    metrics = _final_metrics(adapter, state, manifest, len(rows), result, wall)
    manifest.update(status="done", metrics=metrics, updated=_now(), final=str(final))
    atomic_write_json(adapter.path / "manifest.json", manifest)
    jobs.report_progress(state.global_step, state.global_step, unit="steps", phase="done",
                         message=f"adapter {adapter.id}", force=True)


def _final_metrics(adapter, state, manifest, n_pairs, result, wall) -> dict:
    """The manifest's metrics: last losses/rewards (mean of the last 5), first and last
    checkpoint eval, last meter read-out, speed."""
    evals, readouts = adapter.evals(), adapter.meter()
    logged = [r for r in adapter.metrics() if "loss" in r]
    tail = logged[-max(1, min(5, len(logged))):] if logged else []

    def mean(key):
        return (sum(r[key] for r in tail if key in r) / len(tail)) if tail else None

    def eval_of(row):
        return {k: row[k] for k in ("step", "n", "k", "rate", "ci_low", "ci_high")}

    steps_run = state.global_step - (manifest.get("resumed_from_step") or 0)
    return {
        "steps": state.global_step, "epochs": state.epoch, "n_pairs": n_pairs,
        "final_loss": logged[-1]["loss"] if logged else None,
        "loss_last5": mean("loss"), "margin_last5": mean("rewards/margins"),
        "accuracy_last5": mean("rewards/accuracies"),
        "train_loss": result.training_loss if result else None,
        "runtime_s": wall, "s_per_step": wall / steps_run if steps_run > 0 else None,
        "final_eval": eval_of(evals[-1]) if evals else None,
        "start_eval": eval_of(evals[0]) if evals else None,
        "final_meter": {k: v for k, v in readouts[-1].items() if k not in ("readout", "path")}
        if readouts else None,
    }


# --------------------------------------------------------------------------- adapter directory

def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _update_manifest(adapter: AdapterInfo, **changes) -> dict:
    m = adapter.manifest
    m.update(changes)
    atomic_write_json(adapter.path / "manifest.json", m)
    return m


def _keep_jsonl_upto(path: Path, step: int) -> None:
    """Drop lines logged after `step` (a resumed run logs those steps again)."""
    if path.exists():
        rows = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= step]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
        os.replace(tmp, path)


def _complete_checkpoints(trainer_dir: Path) -> list[tuple[int, Path]]:
    """Trainer checkpoints whose save finished (marker written after export)."""
    out = []
    for p in trainer_dir.glob("checkpoint-*"):
        if (p / "lls_complete").is_file() and (p / "trainer_state.json").is_file():
            out.append((int(p.name.split("-")[1]), p))
    return sorted(out)


def _prepare_adapter_dir(adapter: AdapterInfo, trainer_dir: Path, manifest: dict,
                         resume: Path | None) -> None:
    """Resume: drop what was written after the last complete checkpoint. Fresh start: clear."""
    if resume is not None:
        step = manifest["resumed_from_step"]
        # Half-saved checkpoints after the last complete one would confuse rotation.
        for p in trainer_dir.glob("checkpoint-*"):
            if p.is_dir() and int(p.name.split("-")[1]) > step:
                shutil.rmtree(p, ignore_errors=True)
        for s, p in adapter.checkpoints():
            if s > step:
                shutil.rmtree(p, ignore_errors=True)
        for name in LOG_FILES:
            _keep_jsonl_upto(adapter.path / name, step)
        print(f"[lls.training] resuming {adapter.id} from step {step} ({resume})", flush=True)
        atomic_write_json(adapter.path / "manifest.json", manifest)
    else:
        for name in (*LOG_FILES, "meter_levels.json"):
            (adapter.path / name).unlink(missing_ok=True)
        shutil.rmtree(adapter.path / "checkpoints", ignore_errors=True)
        shutil.rmtree(trainer_dir, ignore_errors=True)
    (adapter.path / "checkpoints").mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------- jobs

def train_command(cfg: TrainConfig, run_key: str, *, adapter_id: str | None = None,
                  baseline_of: str | None = None, cache_dir: Path | None = None,
                  num_processes: int = 1, cpu: bool = True) -> list[str]:
    """The argv of a background training job (`accelerate launch` with N > 1 processes:
    data parallel, one process per device)."""
    argv = [sys.executable, "-m", "lls"]
    if cache_dir:
        argv += ["--cache", str(cache_dir)]
    argv += ["train", "--run", run_key, "--config", json.dumps(cfg.to_dict())]
    if adapter_id:
        argv += ["--adapter-id", adapter_id]
    if baseline_of:
        argv += ["--baseline-of", baseline_of]
    if num_processes > 1:
        argv = launch_argv(argv, num_processes, cpu=cpu)
    return argv


def submit_training(cfg: TrainConfig, run_key: str, *, adapter_id: str | None = None,
                    baseline_of: str | None = None, cache_dir: Path | None = None,
                    exclusive: bool = True, num_processes: int = 1):
    """Start training as a background job (`lls.jobs`); the same settings resume/reattach.
    `num_processes` > 1 runs it data parallel under `accelerate launch`."""
    run = open_run(run_key, cache_dir)
    adapter_id = adapter_id or adapter_id_for(cfg, run.key, baseline_of)
    student = student_spec(cfg, run)
    title = (f"train {cfg.selection.kind} {run.manifest['config']['behavior'].get('name', '')} "
             f"({student.label})")
    job = jobs.submit(train_command(cfg, run.key, adapter_id=adapter_id, baseline_of=baseline_of,
                                    cache_dir=cache_dir, num_processes=num_processes,
                                    cpu=resolve_device(student) == "cpu"),
                      kind="train", title=title, device=student.device or "cpu",
                      exclusive=exclusive, key=f"train:{adapter_id}",
                      params={"adapter_id": adapter_id, "run": run.key,
                              "selection": cfg.selection.kind, "baseline_of": baseline_of})
    _queued_manifest(cfg, run, adapter_id, student, job.id, baseline_of, cache_dir)
    return job


def _queued_manifest(cfg, run, adapter_id, student, job_id, baseline_of, cache_dir) -> None:
    """A queued adapter shows up in the adapters list at once (the job fills in the rest)."""
    path = adapters_root(cache_dir) / adapter_id
    path.mkdir(parents=True, exist_ok=True)
    info = AdapterInfo(adapter_id, path)
    m = info.manifest
    if m.get("status") == "done" and info.final_path is not None:
        return
    if m.get("status") in ACTIVE and m.get("job_id") == job_id:
        return
    m.update({"id": adapter_id, "kind": "adapter", "score_run": run.key,
              "student": student.to_dict(), "base_model": student.to_dict(),
              "behavior": run.manifest["config"]["behavior"],
              "selection": {**cfg.selection.to_dict(), "n_pairs": None},
              "train": cfg.to_dict(), "job_id": job_id, "baseline_of": baseline_of,
              "created": m.get("created", _now()),
              "status": m.get("status") if m.get("status") in ACTIVE else "queued"})
    m.setdefault("metrics", {})
    atomic_write_json(path / "manifest.json", m)


def submit_baseline(of: TrainConfig | AdapterInfo | str, run_key: str | None = None, *,
                    seed: int | None = None, cache_dir: Path | None = None,
                    exclusive: bool = True, num_processes: int = 1):
    """One call: train a recipe on a random subset of the same size, recorded as the random
    twin of the LLS adapter. `of`: that adapter (or its id), or its recipe with `run_key`
    (the adapter need not exist yet: its id is `adapter_id_for(cfg, run_key)`)."""
    if isinstance(of, TrainConfig):
        if run_key is None:
            raise TrainingError("submit_baseline(cfg, run_key): give the scoring run key.")
        cfg, lls_id = of, adapter_id_for(of, open_run(run_key, cache_dir).key)
    else:
        info = of if isinstance(of, AdapterInfo) else open_adapter(of, cache_dir)
        cfg, run_key, lls_id = TrainConfig.from_dict(info.manifest["train"]), \
            info.manifest["score_run"], info.id
    return submit_training(baseline_config(cfg, seed), run_key, baseline_of=lls_id,
                           cache_dir=cache_dir, exclusive=exclusive, num_processes=num_processes)
