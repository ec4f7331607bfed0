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
    (("beta", "DPO β", {"min_value": 0.001, "step": 0.01, "format": "%.3f"}),
     ("learning_rate", "Learning rate", {"min_value": 1e-7, "step": 1e-5, "format": "%.1e"}),
     ("epochs", "Epochs", {"min_value": 0.1, "step": 0.5}),
     ("max_steps", "Stop after this many steps (0 = by epochs)", {"min_value": 0, "step": 1})),
    (("lora_r", "LoRA rank", {"min_value": 1, "step": 8}),
     ("lora_alpha", "LoRA alpha", {"min_value": 1, "step": 8}),
     ("lora_dropout", "LoRA dropout", {"min_value": 0.0, "max_value": 0.9, "step": 0.05}),
     ("target_modules", "Target modules (empty = all attention + MLP projections)", {})),
    (("batch_size", "Pairs per step (batch size)", {"min_value": 1, "step": 1}),
     ("grad_accum", "Gradient accumulation (batches per step)", {"min_value": 1, "step": 1}),
     ("max_length", "Max length (prompt + response, tokens)", {"min_value": 16, "step": 16}),
     ("max_prompt_length", "Drop prompts longer than (tokens, 0 = keep all)",
      {"min_value": 0, "step": 16})),
    (("checkpoint_every", "Checkpoint every N steps", {"min_value": 1, "step": 1}),
     ("eval_at_checkpoints", "Sampled evaluation at checkpoints",
      {"help": "At step 0 and every checkpoint: sample answers to general prompts and count "
               "those showing the behavior."}),
     ("eval_prompts", "Prompts asked", {"min_value": 1, "max_value": 10,
                                        "when": "eval_at_checkpoints"}),
     ("eval_samples", "Answers per prompt", {"min_value": 1, "when": "eval_at_checkpoints"})),
    (("eval_max_new_tokens", "Tokens per answer", {"min_value": 4, "step": 8,
                                                    "when": "eval_at_checkpoints"}),
     ("seed", "Seed", {"min_value": 0, "step": 1}),
     ("reuse_ref_logps", "Reuse the scoring run's log-probabilities as DPO's reference",
      {"help": "Valid when the student is the teacher's base model; checked automatically."}),
     ("precompute_ref_log_probs", "Otherwise compute the reference once before training",
      {"help": "Off: at every step (slower, the same result)."})),
    (("meter_at_checkpoints", "Effect meter at step 0 and checkpoints",
      {"help": "Log-probability read-outs, no sampling: the likelihood ratio and, for "
               "animals, the margin and top-1 share on the probe questions."}),
     ("meter_k", "Reference responses per condition", {
         "min_value": 1, "step": 8, "when": "meter_at_checkpoints",
         "help": "The likelihood ratio reads this many responses sampled with the system "
                 "prompt and as many without it."}),
     ("meter_questions", "Read-out questions (0 = all)", {"min_value": 0, "step": 5,
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
    student = c1.text_input(f"Student model (empty = the scoring run's model: {teacher_label})",
                            value="",
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
