"""Preference data: local files and hub datasets read as a stream of pairs, with every dropped
row counted and a whole-source check before any model loads."""

from .hub import HUB_PRESETS
from .hygiene import HygieneReport
from .prompts import PROMPT_SETS, PromptSource, iter_prompts
from .shapes import SHAPES
from .source import DataSpec, count_raw_rows, iter_pairs, load_pairs, preview
from .validate import ValidationReport, validate_source

__all__ = ["DataSpec", "HUB_PRESETS", "HygieneReport", "PROMPT_SETS", "PromptSource", "SHAPES",
           "ValidationReport", "count_raw_rows", "iter_pairs", "iter_prompts", "load_pairs",
           "preview", "validate_source"]
