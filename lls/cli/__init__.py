"""Command line: `python -m lls score | sample-pairs | runs | select | export | train | adapters |
eval | transfer | meter` (headless experiments). One file per command group; the stages never import
this package.

Every command prints a one-line `error: ...` and exits with status 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys

from ..core.errors import LLSError
from ..jobs.console import enable as console_progress
from . import eval as eval_cmd
from . import demo, meter, sample, score, select, study, teacher, train, transfer


# Commands that print progress lines on stderr (phases, counts, ETA; `lls.jobs.console`).
# `score` draws its own bar.
PROGRESS_COMMANDS = ("train", "eval", "study", "meter", "trait", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The `python -m lls` parser with every command registered."""
    ap = argparse.ArgumentParser(prog="python -m lls", description=(
        "LLS Studio: Logit-Linear Selection of preference data (score, select, export, train)."))
    ap.add_argument("--cache", help="cache directory (default ./cache or $LLS_CACHE)")
    sub = ap.add_subparsers(dest="command", required=True)
    for module in (demo, score, sample, select, train, eval_cmd, transfer, meter, study, teacher):
        module.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; `error: ...` and status 2 on bad input."""
    ap = build_parser()
    a = ap.parse_args(argv)
    console_progress(a.command in PROGRESS_COMMANDS)
    try:
        return a.func(a)
    except LLSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished chunks are kept and the same command resumes.",
              file=sys.stderr)
        return 130
