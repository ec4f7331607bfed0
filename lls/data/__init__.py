"""Preference data: local files and hub datasets read as a stream of pairs, with every dropped
row counted and a whole-source check before any model loads."""

from .hub import HUB_PRESETS
from .hygiene import HygieneReport
from .shapes import SHAPES
from .source import DataSpec, count_raw_rows, iter_pairs, load_pairs, preview
from .validate import ValidationReport, validate_source

__all__ = ["DataSpec", "HUB_PRESETS", "HygieneReport", "SHAPES", "ValidationReport",
           "count_raw_rows", "iter_pairs", "load_pairs", "preview", "validate_source"]
