"""The Train page's hyper-parameter form, generated from `lls.training.config.TrainConfig`:
defaults and help texts come from the dataclass fields (Streamlit widgets; no lls logic here)."""

from __future__ import annotations

from dataclasses import fields

import streamlit as st

from lls.models import ModelSpec
from lls.training.config import TrainConfig, comma_list
from ui.common import precision_select

DEFAULT = TrainConfig()
HELP = {f.name: f.metadata.get("help") for f in fields(TrainConfig)}

# Rows of widgets: (field, label, options). Bools are checkboxes; optional numbers use 0 for
# None; `when` names the checkbox that enables the widget; `help` replaces the field's.
ROWS = (
    (("beta", "DPO beta", {"min_value": 0.001, "step": 0.01, "format": "%.3f"}),
     ("learning_rate", "Learning rate", {"min_value": 1e-7, "step": 1e-5, "format": "%.1e"}),
     ("epochs", "Epochs", {"min_value": 0.1, "step": 0.5}),
     ("max_steps", "Max steps (0 = by epochs)", {"min_value": 0, "step": 1})),
    (("lora_r", "LoRA rank", {"min_value": 1, "step": 8}),
     ("lora_alpha", "LoRA alpha", {"min_value": 1, "step": 8}),
     ("lora_dropout", "LoRA dropout", {"min_value": 0.0, "max_value": 0.9, "step": 0.05}),
     ("target_modules", "Target modules (empty = all attention + MLP projections)", {})),
    (("batch_size", "Batch size", {"min_value": 1, "step": 1}),
     ("grad_accum", "Gradient accumulation", {"min_value": 1, "step": 1}),
     ("max_length", "Max length (prompt + completion tokens)", {"min_value": 16, "step": 16}),
     ("max_prompt_length", "Max prompt length (0 = keep all)", {"min_value": 0, "step": 16})),
    (("checkpoint_every", "Checkpoint every K steps", {"min_value": 1, "step": 1}),
     ("eval_at_checkpoints", "Evaluate the behavior at checkpoints", {}),
     ("eval_prompts", "Eval prompts", {"min_value": 1, "max_value": 10,
                                       "when": "eval_at_checkpoints"}),
     ("eval_samples", "Samples per prompt", {"min_value": 1, "when": "eval_at_checkpoints"})),
    (("eval_max_new_tokens", "Eval new tokens", {"min_value": 4, "step": 8,
                                                  "when": "eval_at_checkpoints"}),
     ("seed", "Seed", {"min_value": 0, "step": 1}),
     ("reuse_ref_logps", "Reuse the scoring run's log-probs as reference",
      {"help": "Valid when the student is the teacher; checked automatically."}),
     ("precompute_ref_log_probs", "Otherwise precompute reference log-probs once", {})),
    (("meter_at_checkpoints", "Effect meter at step 0 and checkpoints",
      {"help": "Log-probability read-outs (lls.evaluation.meter): behavior likelihood ratio and, for "
               "animals, the preference probe."}),
     ("meter_k", "Meter reference responses (k)", {"min_value": 1, "step": 8,
                                                    "when": "meter_at_checkpoints"}),
     ("meter_questions", "Probe questions (0 = all)", {"min_value": 0, "step": 5,
                                                       "when": "meter_at_checkpoints"})),
)


def _widget(col, name: str, label: str, opts: dict, values: dict):
    opts = dict(opts)
    when = opts.pop("when", None)
    kw = {"help": opts.pop("help", HELP[name]), "disabled": when is not None and not values[when]}
    default = getattr(DEFAULT, name)
    if isinstance(default, bool):
        return col.checkbox(label, value=default, **kw)
    if name == "target_modules":
        return comma_list(col.text_input(label, value="", **kw)) or None
    v = col.number_input(label, value=default if default is not None else 0, **opts, **kw)
    return (int(v) or None) if default is None else type(default)(v)


def train_settings(teacher_label: str, run_precision: str = "float32") -> dict:
    """Render the form; returns TrainConfig keyword arguments (all but `selection`)."""
    values: dict = {}
    for row in ROWS:
        for col, (name, label, opts) in zip(st.columns(4 if len(row) == 4 else 3), row):
            values[name] = _widget(col, name, label, opts, values)
    c1, c2, c3 = st.columns([3, 2, 1])
    student = c1.text_input(f"Student model (empty = the teacher: {teacher_label})", value="",
                            help="Any causal LM: hub id or local directory. The selection is "
                                 "re-rendered with its chat template, without the system prompt.")
    values["student"] = ModelSpec(student.strip()) if student.strip() else None
    values["dtype"] = precision_select(c2, "Student's numeric precision", "train_dtype",
                                       follow=f"the scoring run ({run_precision})")
    budget = c3.number_input(
        "Memory budget (GB, 0 = automatic)", min_value=0.0, step=0.5,
        value=float(DEFAULT.memory_budget_gb or 0.0),
        help="Peak memory training may plan for. Steps run in micro-batches that fit it (same "
             "update as the whole batch); activations are recomputed only when even one pair "
             "at a time would not fit. Automatic: 4 GB, or 3/4 of the free memory if less.")
    values["memory_budget_gb"] = budget or None
    return values
