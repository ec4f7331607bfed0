"""Evaluation: whether the behavior transferred: the paper's sampled evaluation, an LLM judge,
the effect meter (probe and likelihood ratio), paired study effects and side-by-side chat."""

from .config import EvalConfig, EvalModel
from .runs import (EvalRun, adapter_models, cluster_command, evaluate, list_evals, open_eval,
                   start_eval, submit_eval)

__all__ = ["EvalConfig", "EvalModel", "EvalRun", "adapter_models", "cluster_command", "evaluate",
           "list_evals", "open_eval", "start_eval", "submit_eval"]
