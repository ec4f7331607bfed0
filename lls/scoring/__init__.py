"""Scoring: the LLS weight of every pair (teacher with and without the system prompt), stored as
resumable runs (of a dataset's pairs or of the model's own sampled answers), and the selections
made from them."""

from .engine import score_rendered
from .runs import (ScoreConfig, ScoreRun, check_hygiene, delete_run, describe_teacher, find_run,
                   list_runs, open_run, run_key, run_status, score, scored_behaviors,
                   submit_scoring)
from .sampled import SamplingSpec
from .selection import Ranking, SelectionConfig, export, select, top_count, twin_flips

__all__ = ["Ranking", "SamplingSpec", "ScoreConfig", "ScoreRun", "SelectionConfig",
           "check_hygiene", "delete_run", "describe_teacher", "export", "find_run", "list_runs", "open_run", "run_key",
           "run_status", "score", "score_rendered", "scored_behaviors", "select",
           "submit_scoring", "top_count",
           "twin_flips"]
