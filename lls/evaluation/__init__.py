"""Evaluation: whether the behavior transferred: the paper's sampled evaluation, an LLM judge,
the effect meter (probe, likelihood ratio and the prefilled read-out with its next-word lens),
paired study effects and side-by-side chat."""

from .config import EvalConfig, EvalModel
from .prefill import PrefillConfig, next_word_probs, prefilled_readout
from .runs import (EvalRun, adapter_models, cluster_command, evaluate, list_evals, open_eval,
                   start_eval, submit_eval)

__all__ = ["EvalConfig", "EvalModel", "EvalRun", "PrefillConfig", "adapter_models",
           "cluster_command", "evaluate", "list_evals", "next_word_probs", "open_eval",
           "prefilled_readout", "start_eval", "submit_eval"]
