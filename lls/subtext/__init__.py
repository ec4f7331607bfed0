"""Subtext: what a selection carries (its tokens, words, phrases and style, beside its random
twin, from the per-token deltas scoring stores) and the audit of which behavior a dataset or a
subset of it leans toward."""

from .report import SubtextData, load, pairs_of, sets, style_table, summary, unit_tables

__all__ = ["SubtextData", "load", "pairs_of", "sets", "style_table", "summary", "unit_tables"]
