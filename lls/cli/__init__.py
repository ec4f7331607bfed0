"""Command line: `python -m lls COMMAND` (headless experiments; `DESCRIPTION` lists the
commands). One file per command group; the stages never import this package.

Every command prints a one-line `error: ...` and exits with status 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys

from ..core.errors import LLSError
from ..jobs.console import enable as console_progress
from . import eval as eval_cmd
from . import demo, meter, sample, score, select, study, subtext, teacher, train, transfer
from .common import Parser


# Commands that print progress lines on stderr (phases, counts, ETA; `lls.jobs.console`).
# `score` draws its own bar.
PROGRESS_COMMANDS = ("train", "eval", "study", "meter", "trait", "demo")


DESCRIPTION = """\
LLS Studio: Logit-Linear Selection of preference data. A teacher (a model with a system
prompt, or with the trait in its weights) scores preference pairs; a student trained on the
top pairs picks up the teacher's behavior. The commands, in the order of a study:

  demo           the whole pipeline once on bundled data (10-20 minutes on 2 cores)
  teacher-check  how strongly a candidate teacher shows the behavior, before scoring
  trait          give a teacher the trait in its weights (a LoRA adapter)
  score          score a preference dataset: one weight w per pair
  sample-pairs   score pairs of the model's own answers (no human labels needed)
  runs           list the scoring runs (their keys go to --run), or delete one
  select         show the top pairs by w (or the random twin of the same size)
  export         write a selection as a DPO-ready dataset
  transfer       do a teacher's and a student's weights agree on the same pairs?
  train          LoRA-DPO training of a student on a selection
  adapters       list the trained adapters
  meter          log-probability read-outs of the behavior (the effect meter)
  eval           sample answers and count the behavior (the paper's protocol)
  study          sweeps of settings, every LLS adapter beside its random twin
  subtext        what a selection carries: tokens, words, phrases, style, beside its twin
  deltas         store per-token deltas for a run scored without them
  audit          which candidate behavior a dataset (or a subset) leans toward

`python -m lls COMMAND --help` describes a command's options."""


def build_parser() -> argparse.ArgumentParser:
    """The `python -m lls` parser with every command registered."""
    ap = Parser(prog="python -m lls", description=DESCRIPTION)
    ap.add_argument("--cache", help="cache directory (default: ./cache, or $LLS_CACHE)")
    # the description lists the commands in their order of use: no second, unordered list
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            help=argparse.SUPPRESS)
    for module in (demo, score, sample, select, train, eval_cmd, transfer, meter, study, teacher,
                   subtext):
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
