"""The training stage: LoRA + DPO of a student on a selection, resumable, in the background.

`train(cfg, run_key)` trains a `peft` LoRA adapter with TRL's `DPOTrainer` on the LLS (or a
same-size random) selection of a finished scoring run and writes everything under
`<cache>/adapters/<adapter_id>/` (the adapter contract):

* `manifest.json`  id, status, base model, student, score run, behavior, selection, train
  config, final metrics, job id, `baseline_of`
* `checkpoints/step-XXXXXX/`  a peft adapter per checkpoint (step 0 = the untrained LoRA init)
* `final/`  the peft adapter at the end of training
* `metrics.jsonl` (one line per logged step), `evals.jsonl` (one line per checkpoint eval)
* `trainer/checkpoint-N/`  Trainer checkpoints (optimizer, scheduler, RNG) for resuming

Reference log-probabilities: when the student is the scoring teacher (same weights, same
chat template), the teacher's log-probs without the system prompt (`lc`, `lr`) are exactly
DPO's reference log-probs (the reference is the base student, and `lls.render` tokenizes the
way TRL does), so they are passed in and TRL never runs the reference model. Rows whose TRL
tokenization differs from what was scored, or that `max_length` would truncate, fall back to
TRL computing their reference log-probs once before training.

`submit_training` runs `python -m lls train ...` as a job of `lls.jobs`; a killed run
resubmitted with the same config (same adapter id) resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import jobs
from .jobs import ACTIVE
from .cache import append_jsonl, atomic_write_json, fingerprint, read_json_safe, read_jsonl, runs_root
from .errors import LLSError
from .models import ModelSpec
from .resources import bound_malloc
from .selection import SelectionConfig
from .selection import selection_indices as _selection_indices

TRAINING_VERSION = "1"
PAPER_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SELECTION_KINDS = ("lls", "random")
# Project only completion tokens through the LM head on CPU (see completion_only_lm_head);
# benchmarks/train_throughput.py turns it off to measure what it saves.
COMPACT_LM_HEAD = True


class TrainingError(LLSError):
    """Training could not start or failed."""


class TrainingCancelled(LLSError):
    """The job system asked this training run to stop (checkpoints are kept)."""


# --------------------------------------------------------------------------- config

@dataclass
class SelectionSpec:
    """Which pairs of the scoring run are trained on.

    `kind="lls"`: the top of the LLS ranking (gamma / threshold / positive_only as in
    `lls.selection.SelectionConfig`). `kind="random"`: a seeded random subset of the same
    size as the LLS selection with these settings (the paper's baseline).
    `control_run`: the key of a control scoring run (`lls.contrastive`); the ranking is then
    by w_target - w_control instead of w_target.
    """

    kind: str = "lls"
    gamma: float | None = 0.05
    threshold: float | None = None
    positive_only: bool = True
    seed: int = 0
    control_run: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SELECTION_KINDS:
            raise TrainingError(f"selection kind must be one of {SELECTION_KINDS}, got {self.kind!r}.")

    def config(self) -> SelectionConfig:
        return SelectionConfig(gamma=self.gamma, threshold=self.threshold,
                               positive_only=self.positive_only)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SelectionSpec":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class TrainConfig:
    """A LoRA-DPO recipe. Paper defaults (beta 0.04, lr 1e-4, LoRA r 64 / alpha 128 on all
    attention and MLP projections, 1 epoch) with CPU-sized batches for the bundled model.

    `student=None` trains the scoring run's teacher. `target_modules=None` means the paper's
    projections when the model has them, else peft's "all-linear". `max_steps` caps the run
    (None: `epochs` passes). `checkpoint_every`: steps between checkpoints (each one exports
    a peft adapter and, with `eval_at_checkpoints`, samples `eval_prompts` x `eval_samples`
    answers of `eval_max_new_tokens` tokens, and with `meter_at_checkpoints` runs the effect
    meter (`lls.meter`: likelihood ratio on `meter_k` reference responses, and for animals
    the preference probe on its first `meter_questions` questions, None = all), also at
    step 0). `max_prompt_length`: drop pairs whose prompt is
    longer, in student tokens (None keeps all). `reuse_ref_logps`: take DPO's reference
    log-probs from the scoring run when valid; `precompute_ref_log_probs`: otherwise let TRL
    compute them once before training (False: every step, TRL's plain setting).
    """

    beta: float = 0.04
    learning_rate: float = 1e-4
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 320
    max_prompt_length: int | None = None
    lr_scheduler: str = "linear"
    responses: str = "scored"
    checkpoint_every: int = 10
    keep_trainer_checkpoints: int = 2
    eval_at_checkpoints: bool = True
    eval_prompts: int = 4
    eval_samples: int = 4
    eval_max_new_tokens: int = 48
    meter_at_checkpoints: bool = True
    meter_k: int = 64
    meter_questions: int | None = None
    seed: int = 0
    # Activations kept for the backward pass were ~5 GB of a batch of 8 at max_length 320 on
    # the bundled model (benchmarks/train_memory.py); checkpointing keeps only layer inputs.
    gradient_checkpointing: bool = True
    reuse_ref_logps: bool = True
    precompute_ref_log_probs: bool = True
    student: ModelSpec | None = None
    selection: SelectionSpec = field(default_factory=SelectionSpec)

    def __post_init__(self) -> None:
        if isinstance(self.student, dict):
            self.student = ModelSpec.from_dict(self.student)
        if isinstance(self.selection, dict):
            self.selection = SelectionSpec.from_dict(self.selection)
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length",
                     "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.beta <= 0 or self.learning_rate <= 0:
            raise TrainingError("beta and learning_rate must be positive.")
        if self.epochs <= 0 and not self.max_steps:
            raise TrainingError("epochs must be positive (or give max_steps).")
        if self.responses not in ("scored", "full"):
            raise TrainingError("responses must be 'scored' or 'full'.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["student"] = self.student.to_dict() if self.student else None
        d["selection"] = self.selection.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def baseline_config(cfg: TrainConfig, seed: int | None = None) -> TrainConfig:
    """The same recipe on a random subset of the same size (the paper's baseline)."""
    sel = SelectionSpec.from_dict({**cfg.selection.to_dict(), "kind": "random",
                                   "seed": cfg.selection.seed if seed is None else seed})
    return TrainConfig.from_dict({**cfg.to_dict(), "selection": sel})


def adapter_id_for(cfg: TrainConfig, run_key: str, baseline_of: str | None = None) -> str:
    """The deterministic adapter id of (recipe, scoring run): the same id resumes."""
    key = fingerprint(TRAINING_VERSION, run_key, cfg.to_dict(), baseline_of)
    return f"{run_key[:8]}-{cfg.selection.kind}-{key[:10]}"


# --------------------------------------------------------------------------- adapters

@dataclass
class AdapterInfo:
    """One trained (or training) adapter under `<cache>/adapters/<id>/`."""

    id: str
    path: Path

    @property
    def manifest(self) -> dict:
        return read_json_safe(self.path / "manifest.json") or {}

    @property
    def status(self) -> str:
        """Manifest status, corrected by the job system when the run died without saying so."""
        m = self.manifest
        status = m.get("status", "unknown")
        if status in ACTIVE and m.get("job_id"):
            try:
                job = jobs.get(m["job_id"])
            except LLSError:
                return status
            if not job.is_active:
                return job.status if job.status != "done" else status
        return status

    @property
    def final_path(self) -> Path | None:
        p = self.path / "final"
        return p if (p / "adapter_config.json").is_file() else None

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Exported peft checkpoints as (step, path), sorted by step."""
        out = []
        for p in (self.path / "checkpoints").glob("step-*"):
            if (p / "adapter_config.json").is_file():
                try:
                    out.append((int(p.name.split("-")[1]), p))
                except ValueError:
                    continue
        return sorted(out)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.path / "metrics.jsonl")

    def evals(self) -> list[dict]:
        return read_jsonl(self.path / "evals.jsonl")

    def meter(self) -> list[dict]:
        """Effect-meter read-outs, one per measured step (see `lls.meter.summary_rows`)."""
        return read_jsonl(self.path / "meter.jsonl")

    def meter_levels(self) -> dict | None:
        """{"base": ..., "system": ...}: the meter's floor and ceiling for this adapter."""
        d = read_json_safe(self.path / "meter_levels.json")
        return d.get("levels") if d else None

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.manifest.get("train", {}))


def adapters_root(cache_dir: Path | None = None) -> Path:
    return runs_root("adapters", cache_dir)


def open_adapter(adapter_id: str, cache_dir: Path | None = None) -> AdapterInfo:
    """An adapter by id (or a unique id prefix)."""
    root = adapters_root(cache_dir)
    exact = root / adapter_id
    if (exact / "manifest.json").is_file():
        return AdapterInfo(adapter_id, exact)
    matches = sorted(p for p in root.glob(f"{adapter_id}*") if (p / "manifest.json").is_file())
    if len(matches) != 1:
        what = "no" if not matches else "more than one"
        raise LLSError(f"{what} adapter matches {adapter_id!r} under {root}; list them with "
                       "`python -m lls adapters`.")
    return AdapterInfo(matches[0].name, matches[0])


def adapter_dir(ref: str, cache_dir: Path | None = None) -> str:
    """A peft adapter directory from a path, or from a trained adapter's id (its final/)."""
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser())
    try:
        info = open_adapter(ref, cache_dir)
    except LLSError as e:
        raise LLSError(f"{ref!r} is neither an adapter directory nor a trained adapter id "
                       "(list them with `python -m lls adapters`).") from e
    if info.final_path is None:
        raise LLSError(f"Adapter {info.id} has no final/ weights yet (status {info.status}); "
                       f"pass one of its checkpoints, under {info.path / 'checkpoints'}.")
    return str(info.final_path)


def list_adapters(cache_dir: Path | None = None) -> list[AdapterInfo]:
    """All adapters, newest first."""
    root = adapters_root(cache_dir)
    if not root.is_dir():
        return []
    infos = [AdapterInfo(p.name, p) for p in root.iterdir() if (p / "manifest.json").is_file()]
    return sorted(infos, key=lambda a: a.manifest.get("created", ""), reverse=True)


def _keep_jsonl_upto(path: Path, step: int) -> None:
    """Drop lines logged after `step` (a resumed run logs those steps again)."""
    if path.exists():
        rows = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= step]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
        os.replace(tmp, path)


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- data

def selection_indices(frame, sel: SelectionSpec):
    """Row indices of the frame that `sel` trains on (LLS: best first; random: sorted)."""
    return _selection_indices(frame["w"].to_numpy(), sel.config(), random=sel.kind == "random",
                              seed=sel.seed)


def selection_frame(run, sel: SelectionSpec, cache_dir: Path | None = None):
    """The frame a selection ranks: the run's own, or, with `sel.control_run`, the
    contrastive frame whose `w` is w_target - w_control (`lls.contrastive`)."""
    if not sel.control_run:
        return run.frame()
    from .contrastive import as_ranked, contrastive_frame
    from .scoring import open_run

    control = open_run(sel.control_run, cache_dir)
    if not control.complete:
        raise TrainingError(f"The control run {control.key} is not complete: finish scoring it "
                            "first (resubmit the same control scoring job).")
    return as_ranked(contrastive_frame(run, control), "w_contrastive")


def selection_count(frame, sel: SelectionSpec) -> int:
    from .selection import Ranking

    return Ranking(frame["w"].to_numpy()).count(sel.config())


def build_rows(frame, cfg: TrainConfig, *, with_ref: bool) -> list[dict]:
    """TRL conversational rows (no system prompt: the student sees the prompt as given)."""
    from .selection import to_trl_rows

    rows = to_trl_rows(frame, selection_indices(frame, cfg.selection), responses=cfg.responses)
    out = []
    for r in rows:
        row = {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
               "pair_id": str(r["id"])}
        if with_ref:
            # What scoring measured: TRL's tokenization is checked against these counts.
            row.update(ref_chosen_logps=float(r["lc"]), ref_rejected_logps=float(r["lr"]),
                       lls_n_c=int(r["n_c"]), lls_n_r=int(r["n_r"]))
        out.append(row)
    return out


def reuse_check(run_manifest: dict, student: ModelSpec, tokenizer, cfg: TrainConfig) -> str | None:
    """None if the scoring run's log-probs are the student's reference log-probs, else why not."""
    from .models import model_fingerprint
    from .scoring import _template_hash

    if not cfg.reuse_ref_logps:
        return "disabled by the config"
    if cfg.responses != "scored":
        return "training on full responses, scoring saw truncated ones"
    if model_fingerprint(student) != run_manifest.get("model_fingerprint"):
        return "the student is not the scoring teacher"
    if _template_hash(tokenizer) != run_manifest.get("template_hash"):
        return "the student's chat template differs from the teacher's"
    return None


# --------------------------------------------------------------------------- cancellation

class _Stop:
    requested = False
    guard = 0  # >0 while saving: a SIGTERM then only sets the flag (no half-written checkpoint)


def _on_sigterm(signum, frame) -> None:
    _Stop.requested = True
    if _Stop.guard == 0:
        raise TrainingCancelled("training cancelled")


def _stop_requested() -> bool:
    return _Stop.requested or jobs.cancel_requested()


class _guarded:
    """A section a SIGTERM must not cut in half (saving); with `then_stop`, a cancel that
    arrived meanwhile stops training right after it (the job runner SIGKILLs after 10 s)."""

    def __init__(self, then_stop: bool = True):
        self.then_stop = then_stop

    def __enter__(self):
        _Stop.guard += 1

    def __exit__(self, *exc):
        _Stop.guard -= 1
        if exc[0] is None and self.then_stop and _Stop.guard == 0 and _stop_requested():
            raise TrainingCancelled("training cancelled")


# --------------------------------------------------------------------------- trainer

def _trainer_class():
    from trl import DPOTrainer

    class LLSDPOTrainer(DPOTrainer):
        """DPOTrainer that takes reference log-probs from the dataset when they are given."""

        lls_reuse = False
        lls_ref_report: dict = {}

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if not self.lls_reuse or "ref_chosen_logps" not in dataset.column_names:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            ml = self.args.max_length
            bad = []
            for i, ex in enumerate(dataset.select_columns(
                    ["prompt_ids", "chosen_ids", "rejected_ids", "lls_n_c", "lls_n_r"])):
                p = len(ex["prompt_ids"])
                c, r = len(ex["chosen_ids"]), len(ex["rejected_ids"])
                truncated = ml is not None and p + max(c, r) > ml
                if truncated or c != ex["lls_n_c"] or r != ex["lls_n_r"]:
                    bad.append(i)
            self.lls_ref_report = {"rows": len(dataset), "reused": len(dataset) - len(bad),
                                   "recomputed": len(bad)}
            if not bad:
                return dataset
            print(f"[lls.training] {len(bad)} of {len(dataset)} pairs are truncated by max_length="
                  f"{ml} or tokenized differently from scoring: TRL computes their reference "
                  "log-probs.", flush=True)
            sub = dataset.select(bad).remove_columns(["ref_chosen_logps", "ref_rejected_logps"])
            sub = super()._precompute_ref_logps(sub, name, batch_size)
            fixed = dict(zip(bad, zip(sub["ref_chosen_logps"], sub["ref_rejected_logps"])))

            def patch(ex, i):
                if i in fixed:
                    ex["ref_chosen_logps"], ex["ref_rejected_logps"] = fixed[i]
                return ex

            return dataset.map(patch, with_indices=True)

        def _save_checkpoint(self, model, trial):
            with _guarded(then_stop=False):  # on_save exports + marks it complete, then stops
                super()._save_checkpoint(model, trial)

    return LLSDPOTrainer


@contextlib.contextmanager
def completion_only_lm_head():
    """Let TRL's fused LM head project only the completion tokens on CPU as well.

    TRL gathers the positions that have a label (the completion) before the vocabulary
    projection on CUDA/XPU, but on other devices it projects every position, prompt and
    padding included, to keep tile shapes fixed for graph compilers. Eager CPU has no such
    need, and with 256-token prompts and 32-token responses that projection (49k-word vocab,
    forward and backward) was about a quarter of a step. Same numbers, fewer rows. A no-op if
    TRL moves the switch.
    """
    try:
        from trl.trainer import utils as trl_utils
        original = trl_utils._use_triton
    except (ImportError, AttributeError):
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


def _target_modules(model, cfg: TrainConfig):
    if cfg.target_modules:
        return list(cfg.target_modules)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return list(PAPER_TARGET_MODULES) if set(PAPER_TARGET_MODULES) <= names else "all-linear"


def _complete_checkpoints(trainer_dir: Path) -> list[tuple[int, Path]]:
    """Trainer checkpoints whose save finished (marker written after export)."""
    out = []
    for p in trainer_dir.glob("checkpoint-*"):
        if (p / "lls_complete").is_file() and (p / "trainer_state.json").is_file():
            out.append((int(p.name.split("-")[1]), p))
    return sorted(out)


def _export_adapter(model, dst: Path) -> None:
    """Save the peft adapter to `dst` atomically (readers never see half a checkpoint)."""
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _meter_settings(behavior, cfg: TrainConfig):
    """(LLRConfig, ProbeConfig or None) of the training-time effect meter."""
    from .meter import PROBE_QUESTIONS, LLRConfig, ProbeConfig, probe_applies

    probe = None
    if probe_applies(behavior):
        n = cfg.meter_questions or len(PROBE_QUESTIONS)
        probe = ProbeConfig(questions=tuple(PROBE_QUESTIONS[:max(1, n)])).with_target(behavior.target)
    return LLRConfig(k=cfg.meter_k), probe


def _make_callback(adapter: AdapterInfo, tokenizer, behavior, cfg: TrainConfig,
                   is_main: bool = True):
    import torch
    from transformers import TrainerCallback

    from . import meter as M
    from .evaluation import GENERAL_PROMPTS, quick_eval

    llr_cfg, probe = _meter_settings(behavior, cfg)

    class LLSCallback(TrainerCallback):
        """Metrics, progress, peft exports + behavior evals at checkpoints, cancellation.

        Under `accelerate launch` only the main process writes and measures; the others
        wait for it at their next collective operation."""

        def __init__(self):
            self.eval_off_reason = None if cfg.eval_at_checkpoints and cfg.eval_samples > 0 \
                else "disabled"
            self.meter_off_reason = None if cfg.meter_at_checkpoints and cfg.meter_k > 0 \
                else "disabled"
            self.reference = None
            self.levels = None
            self.last_logged: dict = {}
            self.t0 = time.time()

        def _levels(self, model) -> dict:
            """Base and base + system prompt read-outs: computed once per adapter (kept in
            meter_levels.json, so a resumed run does not recompute them)."""
            path = adapter.path / "meter_levels.json"
            saved = read_json_safe(path)
            if saved and saved.get("reference") == self.reference.key and \
                    saved.get("probe") == (probe.to_dict() if probe else None):
                return saved["levels"]
            levels = M.reference_levels(model, tokenizer, behavior, self.reference,
                                        probe=probe if probe else False)
            atomic_write_json(path, {"reference": self.reference.key,
                                     "probe": probe.to_dict() if probe else None,
                                     "levels": levels})
            return levels

        def meter(self, model, step: int, path: Path) -> dict | None:
            """The effect meter's read-out of the model as it is now (meter.jsonl)."""
            if self.meter_off_reason:
                return None
            t = time.time()
            try:
                with torch.random.fork_rng():  # the reference set samples once
                    if self.reference is None:
                        self.reference = M.build_reference(model, tokenizer, behavior, llr_cfg)
                    if self.levels is None:
                        self.levels = self._levels(model)
                    r = M.readout_for_peft_model(model, tokenizer, behavior, self.reference,
                                                 levels=self.levels,
                                                 probe=probe if probe else False)
            except LLSError as e:
                self.meter_off_reason = str(e)
                print(f"[lls.training] effect meter off: {e}", flush=True)
                return None
            row = {"step": step, "path": str(path), **M.summary_rows(r)[0],
                   "seconds": round(time.time() - t, 3), "time": time.time(), "readout": r}
            row.pop("label", None)
            append_jsonl(adapter.path / "meter.jsonl", row)
            jobs.log_event(kind="meter", **{k: v for k, v in row.items() if k != "readout"})
            return row

        def measure(self, model, step: int, path: Path) -> None:
            self.evaluate(model, step, path)
            self.meter(model, step, path)

        def evaluate(self, model, step: int, path: Path) -> dict | None:
            if self.eval_off_reason:
                return None
            was_training = model.training
            model.eval()
            try:
                with torch.random.fork_rng():  # keep the Trainer's RNG stream unchanged
                    res = quick_eval(model, tokenizer, behavior,
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
            append_jsonl(adapter.path / "evals.jsonl", row)
            jobs.log_event(kind="eval", **{k: v for k, v in row.items() if k != "examples"})
            return row

        def on_train_begin(self, args, state, control, model=None, **kw):
            if not is_main:
                return self._check_stop(control)
            jobs.report_progress(state.global_step, state.max_steps, unit="steps",
                                 message="training", force=True)
            step0 = adapter.path / "checkpoints" / "step-000000"
            if state.global_step == 0 and not (step0 / "adapter_config.json").is_file():
                with _guarded():
                    _export_adapter(model, step0)
                self.measure(model, 0, step0)
            return self._check_stop(control)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs or not is_main:
                return
            row = {"step": state.global_step, "epoch": state.epoch,
                   **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                   "elapsed": time.time() - self.t0, "time": time.time()}
            self.last_logged = row
            append_jsonl(adapter.path / "metrics.jsonl", row)
            jobs.log_event(kind="train", **row)

        def on_step_end(self, args, state, control, **kw):
            if is_main:
                jobs.report_progress(state.global_step, state.max_steps, unit="steps",
                                     message=f"epoch {state.epoch or 0:.2f}")
            return self._check_stop(control)

        def on_save(self, args, state, control, model=None, **kw):
            if not is_main:
                return self._check_stop(control)
            step = state.global_step
            dst = adapter.path / "checkpoints" / f"step-{step:06d}"
            with _guarded():
                _export_adapter(model, dst)
                ckpt = Path(args.output_dir) / f"checkpoint-{step}"
                if ckpt.is_dir():
                    (ckpt / "lls_complete").write_text(str(step))
            self.measure(model, step, dst)
            return self._check_stop(control)

        def _check_stop(self, control):
            if _stop_requested():  # checkpoints so far are complete: stop now
                raise TrainingCancelled("training cancelled")
            return control

    return LLSCallback()


def train(cfg: TrainConfig, score_run_key: str, *, cache_dir: Path | None = None,
          adapter_id: str | None = None, baseline_of: str | None = None) -> AdapterInfo:
    """Train a LoRA-DPO adapter on the selection of a finished scoring run; resumes.

    Runs in-process (the CLI and background jobs call it). An adapter id that already has
    Trainer checkpoints continues from the last one; a finished adapter is returned as is.
    """
    from .scoring import open_run

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

    in_job = os.environ.get(jobs.ENV_JOB_DIR) is not None
    prev_handler = None
    _Stop.requested, _Stop.guard = False, 0
    if in_job:
        prev_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    adapter.path.mkdir(parents=True, exist_ok=True)
    try:
        return _train(cfg, run, adapter, old, baseline_of, in_job, cache_dir)
    except (TrainingCancelled, KeyboardInterrupt):
        if _is_main():
            _update_manifest(adapter, status="cancelled", updated=_now())
        raise TrainingCancelled(f"Training of {adapter_id} cancelled; checkpoints are kept in "
                                f"{adapter.path} and resubmitting the same settings resumes.")
    except BaseException as e:
        if _is_main():
            _update_manifest(adapter, status="failed", error=f"{e.__class__.__name__}: {e}",
                             updated=_now())
        raise
    finally:
        if in_job:
            signal.signal(signal.SIGTERM, prev_handler or signal.SIG_DFL)


def _is_main() -> bool:
    from .distributed import process_info

    return process_info().is_main


def _update_manifest(adapter: AdapterInfo, **changes) -> dict:
    m = adapter.manifest
    m.update(changes)
    atomic_write_json(adapter.path / "manifest.json", m)
    return m


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
        for name in ("metrics.jsonl", "evals.jsonl", "meter.jsonl"):
            _keep_jsonl_upto(adapter.path / name, step)
        print(f"[lls.training] resuming {adapter.id} from step {step} ({resume})", flush=True)
        atomic_write_json(adapter.path / "manifest.json", manifest)
    else:
        for name in ("metrics.jsonl", "evals.jsonl", "meter.jsonl", "meter_levels.json"):
            (adapter.path / name).unlink(missing_ok=True)
        shutil.rmtree(adapter.path / "checkpoints", ignore_errors=True)
        shutil.rmtree(trainer_dir, ignore_errors=True)
    (adapter.path / "checkpoints").mkdir(parents=True, exist_ok=True)


def _train(cfg: TrainConfig, run, adapter: AdapterInfo, old: dict, baseline_of, in_job,
           cache_dir: Path | None = None) -> AdapterInfo:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig

    from .behaviors import Behavior
    from .distributed import barrier, process_info
    from .models import load_model, load_tokenizer, resolve_device

    pinfo = process_info()

    score_cfg = run.manifest["config"]
    teacher = ModelSpec.from_dict(score_cfg["model"])
    student = cfg.student or teacher
    behavior = Behavior.from_dict(score_cfg["behavior"])
    frame = selection_frame(run, cfg.selection, cache_dir)
    n_selected = selection_count(frame, cfg.selection)
    if n_selected == 0:
        raise TrainingError(f"The selection of run {run.key} is empty "
                            f"({cfg.selection.to_dict()}): raise gamma or lower the threshold.")

    tokenizer = load_tokenizer(student)
    why_not = reuse_check(run.manifest, student, tokenizer, cfg)
    rows = build_rows(frame, cfg, with_ref=why_not is None)
    if cfg.max_prompt_length:
        before = len(rows)
        rows = [r for r in rows if len(tokenizer.apply_chat_template(
            r["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
                <= cfg.max_prompt_length]
        if len(rows) < before:
            print(f"[lls.training] dropped {before - len(rows)} pairs with prompts longer than "
                  f"{cfg.max_prompt_length} tokens", flush=True)
        if not rows:
            raise TrainingError("Every selected prompt is longer than max_prompt_length.")
    if why_not is None:
        ref_source = "scoring run (teacher log-probs without the system prompt)"
    else:
        ref_source = "TRL, once before training" if cfg.precompute_ref_log_probs else "TRL, every step"
        print(f"[lls.training] reference log-probs not reused: {why_not}; computed by {ref_source}",
              flush=True)

    job_dir = os.environ.get(jobs.ENV_JOB_DIR)
    manifest = {
        "id": adapter.id, "kind": "adapter", "status": "running",
        "base_model": student.to_dict(), "student": student.to_dict(), "teacher": teacher.to_dict(),
        "score_run": run.key, "behavior": behavior.to_dict(),
        "selection": {**cfg.selection.to_dict(), "n_pairs": len(rows)},
        "train": cfg.to_dict(), "metrics": old.get("metrics", {}),
        "created": old.get("created", _now()), "updated": _now(),
        "job_id": Path(job_dir).name if job_dir else old.get("job_id"),
        "baseline_of": baseline_of if baseline_of is not None else old.get("baseline_of"),
        "ref_logps": ref_source,
    }
    if pinfo.world_size > 1:
        manifest["processes"] = pinfo.world_size
    trainer_dir = adapter.path / "trainer"
    done_ckpts = _complete_checkpoints(trainer_dir) if trainer_dir.is_dir() else []
    # Every rank decides where to resume from before the main process tidies up.
    barrier()
    resume = None
    if done_ckpts:
        manifest["resumed_from_step"], resume = done_ckpts[-1]
    if pinfo.is_main:
        atomic_write_json(adapter.path / "manifest.json", manifest)
        _prepare_adapter_dir(adapter, trainer_dir, manifest, resume)
    barrier()

    model, _ = load_model(student, for_training=True)
    device = resolve_device(student)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=_target_modules(model, cfg), bias="none",
                      task_type="CAUSAL_LM")
    args = DPOConfig(
        output_dir=str(trainer_dir), beta=cfg.beta, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length, lr_scheduler_type=cfg.lr_scheduler,
        # bf16 autocast (TRL's default) is slow and inexact on CPU.
        gradient_checkpointing=cfg.gradient_checkpointing, bf16=False, fp16=False,
        use_cpu=device == "cpu", seed=cfg.seed, data_seed=cfg.seed,
        precompute_ref_log_probs=why_not is None or cfg.precompute_ref_log_probs,
        logging_steps=1, save_strategy="steps", save_steps=cfg.checkpoint_every,
        save_total_limit=max(1, cfg.keep_trainer_checkpoints), save_only_model=False,
        report_to="none", disable_tqdm=in_job, dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )
    Trainer = _trainer_class()
    Trainer.lls_reuse = why_not is None
    callback = _make_callback(adapter, tokenizer, behavior, cfg, is_main=pinfo.is_main)
    with completion_only_lm_head() if COMPACT_LM_HEAD else contextlib.nullcontext():
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora, callbacks=[callback])
        if trainer.lls_ref_report and pinfo.is_main:
            manifest["ref_logps_rows"] = trainer.lls_ref_report
            atomic_write_json(adapter.path / "manifest.json", manifest)
        t0 = time.time()
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        wall = time.time() - t0
    state = trainer.state
    if _stop_requested():
        raise TrainingCancelled("cancelled")
    if not pinfo.is_main:  # the main process exports and records the result
        return adapter

    final = adapter.path / "final"
    _export_adapter(trainer.model, final)
    evals = adapter.evals()
    if not evals or evals[-1].get("step") != state.global_step:
        callback.evaluate(trainer.model, state.global_step, final)
        evals = adapter.evals()
    readouts = adapter.meter()
    if not readouts or readouts[-1].get("step") != state.global_step:
        callback.meter(trainer.model, state.global_step, final)
        readouts = adapter.meter()
    logged = [r for r in adapter.metrics() if "loss" in r]
    tail = logged[-max(1, min(5, len(logged))):] if logged else []
    mean = lambda key: (sum(r[key] for r in tail if key in r) / len(tail)) if tail else None  # noqa: E731
    steps_run = state.global_step - (manifest.get("resumed_from_step") or 0)
    metrics = {
        "steps": state.global_step, "epochs": state.epoch, "n_pairs": len(rows),
        "final_loss": logged[-1]["loss"] if logged else None,
        "loss_last5": mean("loss"), "margin_last5": mean("rewards/margins"),
        "accuracy_last5": mean("rewards/accuracies"),
        "train_loss": result.training_loss if result else None,
        "runtime_s": wall, "s_per_step": wall / steps_run if steps_run > 0 else None,
        "final_eval": {k: evals[-1][k] for k in ("step", "n", "k", "rate", "ci_low", "ci_high")}
        if evals else None,
        "start_eval": {k: evals[0][k] for k in ("step", "n", "k", "rate", "ci_low", "ci_high")}
        if evals else None,
        "final_meter": {k: v for k, v in readouts[-1].items() if k not in ("readout", "path")}
        if readouts else None,
    }
    manifest.update(status="done", metrics=metrics, updated=_now(), final=str(final))
    atomic_write_json(adapter.path / "manifest.json", manifest)
    jobs.report_progress(state.global_step, state.global_step, unit="steps", message="done",
                         force=True)
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return adapter


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
        from .distributed import launch_argv

        argv = launch_argv(argv, num_processes, cpu=cpu)
    return argv


def submit_training(cfg: TrainConfig, run_key: str, *, adapter_id: str | None = None,
                    baseline_of: str | None = None, cache_dir: Path | None = None,
                    exclusive: bool = True, num_processes: int = 1):
    """Start training as a background job (`lls.jobs`); the same settings resume/reattach.
    `num_processes` > 1 runs it data parallel under `accelerate launch`."""
    from .models import resolve_device
    from .scoring import open_run

    run = open_run(run_key, cache_dir)
    adapter_id = adapter_id or adapter_id_for(cfg, run.key, baseline_of)
    student = cfg.student or ModelSpec.from_dict(run.manifest["config"]["model"])
    title = (f"train {cfg.selection.kind} {run.manifest['config']['behavior'].get('name', '')} "
             f"({student.label})")
    device = student.device or "cpu"
    job = jobs.submit(train_command(cfg, run.key, adapter_id=adapter_id, baseline_of=baseline_of,
                                    cache_dir=cache_dir, num_processes=num_processes,
                                    cpu=resolve_device(student) == "cpu"),
                      kind="train", title=title, device=device,
                      exclusive=exclusive, key=f"train:{adapter_id}",
                      params={"adapter_id": adapter_id, "run": run.key,
                              "selection": cfg.selection.kind, "baseline_of": baseline_of})
    # A queued adapter shows up in the adapters list at once (the job fills in the rest).
    path = adapters_root(cache_dir) / adapter_id
    path.mkdir(parents=True, exist_ok=True)
    info = AdapterInfo(adapter_id, path)
    m = info.manifest
    if m.get("status") != "done" or info.final_path is None:
        if m.get("status") not in ACTIVE or m.get("job_id") != job.id:
            m.update({"id": adapter_id, "kind": "adapter", "score_run": run.key,
                      "student": student.to_dict(), "base_model": student.to_dict(),
                      "behavior": run.manifest["config"]["behavior"],
                      "selection": {**cfg.selection.to_dict(), "n_pairs": None},
                      "train": cfg.to_dict(), "job_id": job.id, "baseline_of": baseline_of,
                      "created": m.get("created", _now()),
                      "status": m.get("status") if m.get("status") in ACTIVE else "queued"})
            m.setdefault("metrics", {})
            atomic_write_json(path / "manifest.json", m)
    return job


def submit_baseline(adapter: AdapterInfo | str, *, seed: int | None = None,
                    cache_dir: Path | None = None, exclusive: bool = True,
                    num_processes: int = 1):
    """One call: train an adapter's recipe on a random subset of the same size."""
    info = adapter if isinstance(adapter, AdapterInfo) else open_adapter(adapter, cache_dir)
    m = info.manifest
    cfg = baseline_config(TrainConfig.from_dict(m["train"]), seed)
    return submit_training(cfg, m["score_run"], baseline_of=info.id, cache_dir=cache_dir,
                           exclusive=exclusive, num_processes=num_processes)


def baseline_of(adapter_id: str, cache_dir: Path | None = None) -> AdapterInfo | None:
    """The newest random-baseline adapter trained for `adapter_id`, if any."""
    for a in list_adapters(cache_dir):
        if a.manifest.get("baseline_of") == adapter_id:
            return a
    return None
