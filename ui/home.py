"""The home page's words: what each page is for, in one line, and job types by name."""

from __future__ import annotations

import ast
from pathlib import Path

# What each page is for, in one line (a page not listed here shows its docstring's first line).
PAGE_LINES = {
    "Setup": "Pick the data, the target behavior and the teacher, then score the pairs",
    "Explore": "The weights of a scored run: histogram, top pairs, the selection and its "
               "random baseline, export",
    "Train": "Train a student on a selection (LoRA + DPO) and its random twin, with live "
             "loss and read-out curves",
    "Chat": "Ask base, base + system prompt and your adapters the same question side by side",
    "Evaluate": "Sample answers and count the behavior (the paper's protocol), beside the "
                "log-probability read-outs",
    "Transfer": "Score the same pairs with another student model and compare the weights",
    "Studies": "Sweeps where every LLS adapter has its random twin: paired effects, the "
               "verdict, a report to send",
    "Subtext": "What a selection carries, token by token and style by style, beside its twin",
    "Audit": "Toward which hidden behavior a dataset, or a subset of it, leans",
}
JOB_KINDS = {"score": "scoring", "train": "training", "eval": "evaluation", "study": "study",
             "demo": "demo", "trait": "trait adapter", "audit": "audit"}


def page_name(path: Path) -> str:
    """'pages/4_Chat.py' -> 'Chat' (how the sidebar names it)."""
    return path.stem.split("_", 1)[1].replace("_", " ")


def page_line(path: Path) -> str:
    """What a page is for, in one line."""
    name = page_name(path)
    if name in PAGE_LINES:
        return PAGE_LINES[name]
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = doc.split("\n\n")[0].replace("\n", " ")
    return first.split(": ", 1)[-1] if first.startswith(name) else first
