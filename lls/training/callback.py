"""The Trainer callback of a training run: metrics, progress, peft exports at checkpoints,
behavior evals and effect-meter read-outs at step 0 and every checkpoint, cancellation.

Under `accelerate launch` only the main process writes and measures; the others wait for it
at their next collective operation. This module imports torch and transformers at the top:
`lls.training` imports it only when a run starts.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from .. import jobs
from ..core.cache import append_jsonl, atomic_write_json, fingerprint, read_json_safe
from ..core.errors import LLSError
from ..core.prompts import GENERAL_PROMPTS
from ..evaluation import meter as M
from ..evaluation.llr import LLRConfig
from ..evaluation.probe import probe_applies, probe_config
from ..evaluation.runs import quick_eval
from .adapters import AdapterInfo, export_adapter
from .cancel import TrainingCancelled, guarded, raise_if_stopped
from .config import TrainConfig


def meter_settings(behavior, cfg: TrainConfig):
    """(LLRConfig, ProbeConfig or None) of the training-time effect meter."""
    probe = None
    if probe_applies(behavior):
        probe = probe_config(cfg.meter_questions).with_target(behavior.target)
    return LLRConfig(k=cfg.meter_k), probe


class LLSCallback(TrainerCallback):
    """Writes an adapter's metrics.jsonl, checkpoints/, evals.jsonl and meter.jsonl."""

    def __init__(self, adapter: AdapterInfo, tokenizer, behavior, cfg: TrainConfig,
                 is_main: bool = True, teacher=None):
        self.adapter, self.tokenizer, self.behavior, self.cfg = adapter, tokenizer, behavior, cfg
        self.teacher = teacher  # the ceiling's teacher (None: base + system prompt)
        self.is_main = is_main
        self.llr_cfg, self.probe = meter_settings(behavior, cfg)
        self.eval_off_reason = None if cfg.eval_at_checkpoints and cfg.eval_samples > 0 \
            else "disabled"
        self.meter_off_reason = None if cfg.meter_at_checkpoints and cfg.meter_k > 0 \
            else "disabled"
        self.reference = None
        self.levels = None
        self.last_logged: dict = {}
        self.t0 = time.time()

    # ---------------------------------------------------------------- measurements

    def _shared_path(self) -> Path | None:
        """Where the base read-outs of this reference set and probe are kept for every
        adapter of the same base model (beside the reference set; None if it is not cached)."""
        if self.reference is None or not self.reference.path:
            return None
        probe = self.probe.to_dict() if self.probe else None
        return Path(self.reference.path).parent / f"levels-{fingerprint(probe)}.json"

    def _levels(self, model) -> dict:
        """Base and base + system prompt read-outs, and the step-0 read-out of an adapter that
        starts as the base (LoRA B = 0): computed once per base model and reference set, kept
        beside the reference set and in the adapter's meter_levels.json."""
        path = self.adapter.path / "meter_levels.json"
        probe = self.probe.to_dict() if self.probe else None
        shared = self._shared_path()
        for p in (path, shared):
            saved = read_json_safe(p) if p is not None else None
            if saved and saved.get("reference") == self.reference.key and \
                    saved.get("probe") == probe:
                if p != path:
                    atomic_write_json(path, saved)
                return saved["levels"]
        jobs.report_phase("meter levels", "base and base + system prompt read-outs (once)")
        levels = M.reference_levels(model, self.tokenizer, self.behavior, self.reference,
                                    probe=self.probe or False, teacher=self.teacher)
        record = {"reference": self.reference.key, "probe": probe, "levels": levels}
        atomic_write_json(path, record)
        if shared is not None:
            atomic_write_json(shared, record)
        return levels

    def _start_readout(self, model) -> dict:
        """The read-out at step 0. A LoRA adapter whose B matrices are all zero computes
        exactly the base model, so its read-out is the base's with the levels as baselines:
        the same for every adapter of this base model, computed once and shared."""
        shared = self._shared_path()
        zero = all(not p.any() for n, p in model.named_parameters() if "lora_B" in n)
        saved = read_json_safe(shared) if shared is not None and zero else None
        if saved and saved.get("reference") == self.reference.key and saved.get("start"):
            return saved["start"]
        r = M.readout_for_peft_model(model, self.tokenizer, self.behavior, self.reference,
                                     levels=self.levels, probe=self.probe or False)
        if saved is not None:
            atomic_write_json(shared, {**saved, "start": r})
        return r

    def meter(self, model, step: int, path: Path) -> dict | None:
        """The effect meter's read-out of the model as it is now (meter.jsonl)."""
        if self.meter_off_reason:
            return None
        t = time.time()
        jobs.report_phase(f"meter @ step {step}")
        try:
            with torch.random.fork_rng():  # the reference set samples once
                if self.reference is None:
                    self.reference = M.build_reference(model, self.tokenizer, self.behavior,
                                                       self.llr_cfg, teacher=self.teacher)
                if self.levels is None:
                    self.levels = self._levels(model)
                r = self._start_readout(model) if step == 0 else M.readout_for_peft_model(
                    model, self.tokenizer, self.behavior, self.reference, levels=self.levels,
                    probe=self.probe or False)
        except TrainingCancelled:
            raise  # a cancel (SIGTERM) during a read-out stops the run, it is no meter error
        except LLSError as e:
            self.meter_off_reason = str(e)
            print(f"[lls.training] effect meter off: {e}", flush=True)
            return None
        row = {"step": step, "path": str(path), **M.summary_rows(r)[0],
               "seconds": round(time.time() - t, 3), "time": time.time(), "readout": r}
        row.pop("label", None)
        append_jsonl(self.adapter.path / "meter.jsonl", row)
        jobs.log_event(kind="meter", **{k: v for k, v in row.items() if k != "readout"})
        return row

    def evaluate(self, model, step: int, path: Path) -> dict | None:
        """A small sampled behavior eval of the model as it is now (evals.jsonl)."""
        if self.eval_off_reason:
            return None
        cfg = self.cfg
        jobs.report_phase(f"eval @ step {step}", f"{cfg.eval_prompts} prompts x "
                                                 f"{cfg.eval_samples} samples")
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng():  # keep the Trainer's RNG stream unchanged
                res = quick_eval(model, self.tokenizer, self.behavior,
                                 prompts=GENERAL_PROMPTS[:max(1, cfg.eval_prompts)],
                                 samples=cfg.eval_samples,
                                 max_new_tokens=cfg.eval_max_new_tokens, seed=cfg.seed)
        except NotImplementedError as e:  # e.g. a judge metric: no quick eval possible
            self.eval_off_reason = str(e)
            print(f"[lls.training] checkpoint evals off: {e}", flush=True)
            return None
        finally:
            if was_training:
                model.train()
        row = {"step": step, "n": res["n"], "k": res["k"], "rate": res["rate"],
               "mean_score": res["mean_score"], "ci_low": res["ci_low"],
               "ci_high": res["ci_high"], "path": str(path),
               "examples": res["examples"][:4], "time": time.time()}
        append_jsonl(self.adapter.path / "evals.jsonl", row)
        jobs.log_event(kind="eval", **{k: v for k, v in row.items() if k != "examples"})
        return row

    def measure(self, model, step: int, path: Path) -> None:
        """Eval and meter read-out of a checkpoint."""
        self.evaluate(model, step, path)
        self.meter(model, step, path)

    # ---------------------------------------------------------------- Trainer events

    def on_train_begin(self, args, state, control, model=None, **kw):
        if self.is_main:
            step0 = self.adapter.path / "checkpoints" / "step-000000"
            if state.global_step == 0 and not (step0 / "adapter_config.json").is_file():
                with guarded():
                    export_adapter(model, step0)
                self.measure(model, 0, step0)
            jobs.report_progress(state.global_step, state.max_steps, unit="steps",
                                 phase="training", message=self._plan(args), force=True)
        raise_if_stopped()
        return control

    @staticmethod
    def _plan(args) -> str:
        ga = args.gradient_accumulation_steps
        return (f"{ga} micro-batches of {args.per_device_train_batch_size} pairs per step"
                if ga > 1 else f"batches of {args.per_device_train_batch_size} pairs") + \
            (", activation checkpointing" if args.activation_checkpointing else "")

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" not in logs or not self.is_main:
            return
        row = {"step": state.global_step, "epoch": state.epoch,
               **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
               "elapsed": time.time() - self.t0, "time": time.time()}
        self.last_logged = row
        append_jsonl(self.adapter.path / "metrics.jsonl", row)
        jobs.log_event(kind="train", **row)
        # one line per step (logging_steps=1): the step's loss with the count and ETA
        jobs.report_progress(state.global_step, state.max_steps, unit="steps", phase="training",
                             message=f"loss {logs['loss']:.4f} · epoch {state.epoch or 0:.2f}",
                             force=True)

    def on_step_end(self, args, state, control, **kw):
        raise_if_stopped()
        return control

    def on_save(self, args, state, control, model=None, **kw):
        if self.is_main:
            step = state.global_step
            dst = self.adapter.path / "checkpoints" / f"step-{step:06d}"
            jobs.report_phase(f"checkpoint @ step {step}", "export")
            with guarded():
                export_adapter(model, dst)
                ckpt = Path(args.output_dir) / f"checkpoint-{step}"
                if ckpt.is_dir():
                    (ckpt / "lls_complete").write_text(str(step))
            self.measure(model, step, dst)
        raise_if_stopped()
        return control
