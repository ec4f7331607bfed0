"""TRL glue: the DPO trainer subclass, its rows, LoRA targets and arguments, and the check
that the scoring run's log-probs are DPO's reference log-probs.

Reference log-probabilities: when the student is the scoring teacher (same weights, same
chat template), the teacher's log-probs without the system prompt (`lc`, `lr`) are exactly
DPO's reference log-probs (the reference is the base student, and `lls.models.render` tokenizes the
way TRL does), so they are passed in and TRL never runs the reference model. Rows whose TRL
tokenization differs from what was scored, or that `max_length` would truncate, fall back to
TRL computing their reference log-probs once before training.

trl, peft and transformers are imported inside the functions that need them: importing this
module (the CLI, the dashboard) stays fast.
"""

from __future__ import annotations

import contextlib

from ..models.load import ModelSpec, model_fingerprint, precision, resolve
from ..scoring.runs import _template_hash
from ..scoring.selection import to_trl_rows, twin_flips
from .cancel import guarded
from .config import TrainConfig, selection_indices
from .sampler import StepSortedSampler, pair_lengths
from .trl_internals import require_dpo_overrides, use_triton_on_cpu

# A chat turn's closing tokens after the response text (e.g. "<|im_end|>" and a newline).
END_OF_TURN_TOKENS = 2
PAPER_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_rows(frame, cfg: TrainConfig, *, with_ref: bool) -> list[dict]:
    """TRL conversational rows (no system prompt: the student sees the prompt as given)."""
    idx = selection_indices(frame, cfg.selection)
    # A sampled run's random twin turns a seeded half of its pairs round (see twin_flips).
    flip = twin_flips(frame, idx, cfg.selection.seed) if cfg.selection.kind == "random" else None
    rows = to_trl_rows(frame, idx, responses=cfg.responses, flip=flip)
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


def drop_long_prompts(rows: list[dict], tokenizer, max_prompt_length: int | None) -> list[dict]:
    """The rows whose chat-templated prompt fits `max_prompt_length` student tokens."""
    if not max_prompt_length:
        return rows
    kept = [r for r in rows if len(tokenizer.apply_chat_template(
        r["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
            <= max_prompt_length]
    if len(kept) < len(rows):
        print(f"[lls.training] dropped {len(rows) - len(kept)} pairs with prompts longer than "
              f"{max_prompt_length} tokens", flush=True)
    return kept


def reuse_check(run_manifest: dict, student: ModelSpec, tokenizer, cfg: TrainConfig) -> str | None:
    """None if the scoring run's log-probs are the student's reference log-probs, else why not."""
    if not cfg.reuse_ref_logps:
        return "disabled by the config"
    if cfg.responses != "scored":
        return "training on full responses, scoring saw truncated ones"
    if model_fingerprint(student) != run_manifest.get("model_fingerprint"):
        if resolve(student).fingerprint == (run_manifest.get("model_fingerprint") or "").split(
                "+")[0]:
            return (f"the student computes in {precision(student)}, the run was scored in "
                    "another precision")
        return "the student is not the scoring teacher"
    if _template_hash(tokenizer) != run_manifest.get("template_hash"):
        return "the student's chat template differs from the teacher's"
    if (run_manifest.get("config") or {}).get("neutral", "template") != "template":
        # DPO's reference is log P(r | p) with p as the student sees it (the bare
        # conversation); an 'empty'-convention run scored another conditioning.
        return ("the run was scored with an explicit empty system turn (neutral 'empty'); "
                "the student is trained on the prompt as given")
    return None


def target_modules(model, cfg: TrainConfig):
    """The LoRA targets: the config's, else the paper's projections if the model has them,
    else peft's "all-linear"."""
    if cfg.target_modules:
        return list(cfg.target_modules)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return list(PAPER_TARGET_MODULES) if set(PAPER_TARGET_MODULES) <= names else "all-linear"


def lora_config(model, cfg: TrainConfig):
    """peft's LoraConfig of the recipe."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target_modules(model, cfg), bias="none",
                      task_type="CAUSAL_LM")


def longest_sequence(rows: list[dict], tokenizer, max_length: int | None) -> int:
    """Tokens of the longest prompt + response TRL will train on (capped at max_length):
    the padded length of the worst micro-batch, which the memory plan sizes for."""
    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    longest = 0
    for r in rows:
        p = len(tokenizer.apply_chat_template(r["prompt"], tokenize=True,
                                              add_generation_prompt=True,
                                              return_dict=True)["input_ids"])
        c = r.get("lls_n_c") or tokens(r["chosen"][0]["content"]) + END_OF_TURN_TOKENS
        rj = r.get("lls_n_r") or tokens(r["rejected"][0]["content"]) + END_OF_TURN_TOKENS
        longest = max(longest, p + max(c, rj))
    return min(longest, max_length) if max_length else longest


def dpo_args(cfg: TrainConfig, output_dir: str, plan, *, cpu: bool, reuse: bool):
    """TRL's DPOConfig of the recipe computed as `plan` (a `lls.jobs.resources.TrainingPlan`:
    micro-batch, accumulation, activation checkpointing): a checkpoint every
    `checkpoint_every` steps, a log line every step. `reuse`: reference log-probs come with
    the rows (precomputed, by us). Progress is reported by `lls.training.callback`, so
    transformers' own bar and log printer stay off."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=output_dir, beta=cfg.beta, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.grad_accum,
        max_length=cfg.max_length, lr_scheduler_type=cfg.lr_scheduler,
        # No autocast (TRL's bf16 default): a bfloat16 student's projections already compute
        # in bfloat16 (`lls.models.load.bf16_linears`) while LoRA, the LM head and the loss
        # stay float32; autocast would put those in bfloat16 too, and slows CPUs without
        # bfloat16 units. transformers 5's name for activation checkpointing
        # (`gradient_checkpointing` is its deprecated alias, a FutureWarning per run).
        activation_checkpointing=plan.checkpointing, bf16=False, fp16=False,
        use_cpu=cpu, seed=cfg.seed, data_seed=cfg.seed,
        precompute_ref_log_probs=reuse or cfg.precompute_ref_log_probs,
        logging_steps=1, save_strategy="steps", save_steps=cfg.checkpoint_every,
        save_total_limit=max(1, cfg.keep_trainer_checkpoints), save_only_model=False,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )


def trainer_class(reuse: bool):
    """A DPOTrainer subclass that takes reference log-probs from the dataset when `reuse`
    (recomputing only the rows where that would be wrong) and saves checkpoints guarded
    against a cancel arriving mid-save, its steps' pairs sorted by length into micro-batches."""
    from trl import DPOTrainer

    require_dpo_overrides()

    class LLSDPOTrainer(DPOTrainer):
        lls_reuse = reuse
        lls_ref_report: dict = {}

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if not self.lls_reuse or "ref_chosen_logps" not in dataset.column_names:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            bad = _rows_to_recompute(dataset, self.args.max_length)
            self.lls_ref_report = {"rows": len(dataset), "reused": len(dataset) - len(bad),
                                   "recomputed": len(bad)}
            if not bad:
                return dataset
            print(f"[lls.training] {len(bad)} of {len(dataset)} pairs are truncated by max_length="
                  f"{self.args.max_length} or tokenized differently from scoring: TRL computes "
                  "their reference log-probs.", flush=True)
            sub = dataset.select(bad).remove_columns(["ref_chosen_logps", "ref_rejected_logps"])
            sub = super()._precompute_ref_logps(sub, name, batch_size)
            fixed = dict(zip(bad, zip(sub["ref_chosen_logps"], sub["ref_rejected_logps"])))

            def patch(ex, i):
                if i in fixed:
                    ex["ref_chosen_logps"], ex["ref_rejected_logps"] = fixed[i]
                return ex

            return dataset.map(patch, with_indices=True)

        # Micro-batches: transformers divides each micro-batch's mean loss by the number of
        # micro-batches (TRL: loss_is_scaled_for_ga False), which is the step's mean over
        # pairs only when they are the same size. Weighting each by its rows makes an
        # uneven last step of an epoch the mean over its pairs too, as one batch would be.
        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches, n_items = super().get_batch_samples(epoch_iterator, num_batches, device)
            self.lls_step_rows = sum(len(b["input_ids"]) for b in batches)
            return batches, n_items

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            rows = getattr(self, "lls_step_rows", 0)
            scale = len(inputs["input_ids"]) * self.current_gradient_accumulation_steps / rows \
                if rows and model.training else 1.0
            if scale == 1.0:
                return out
            return (out[0] * scale, *out[1:]) if return_outputs else out * scale

        # Each step's pairs sorted by length before they are cut into micro-batches: less
        # padding, the same pairs per step (lls.training.sampler).
        def _get_train_sampler(self, train_dataset=None):
            data = self.train_dataset if train_dataset is None else train_dataset
            a = self.args
            return StepSortedSampler(
                pair_lengths(data, a.max_length),
                a.train_batch_size * a.gradient_accumulation_steps * max(1, a.world_size),
                seed=a.data_seed if a.data_seed is not None else a.seed)

        def _save_checkpoint(self, model, trial):
            with guarded(then_stop=False):  # on_save exports + marks it complete, then stops
                super()._save_checkpoint(model, trial)

    return LLSDPOTrainer


def _rows_to_recompute(dataset, max_length: int | None) -> list[int]:
    """Rows TRL truncates, or tokenized to other lengths than scoring counted."""
    bad = []
    for i, ex in enumerate(dataset.select_columns(
            ["prompt_ids", "chosen_ids", "rejected_ids", "lls_n_c", "lls_n_r"])):
        p = len(ex["prompt_ids"])
        c, r = len(ex["chosen_ids"]), len(ex["rejected_ids"])
        truncated = max_length is not None and p + max(c, r) > max_length
        if truncated or c != ex["lls_n_c"] or r != ex["lls_n_r"]:
            bad.append(i)
    return bad


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
    with use_triton_on_cpu():
        yield
