"""`python -m lls transfer --run A --student-run B`: teacher vs student weight agreement."""

from __future__ import annotations

import argparse
import json

from ..core.errors import LLSError
from ..scoring.runs import open_run
from ..scoring.transfer import compare_runs
from .common import add_run_arg


def register(sub) -> None:
    """`python -m lls transfer --run A --student-run B [--gamma G]`: print the comparison as
    JSON. The earlier spelling `transfer RUN_A RUN_B` still works (hidden)."""
    p = sub.add_parser("transfer", help="compare two scoring runs' weights on the same pairs "
                                        "(transfer diagnostic)")
    add_run_arg(p, required=False, help="the teacher's scoring run key (or a unique prefix)")
    add_run_arg(p, required=False, flag="--student-run",
                help="the student's run of the same pairs: its key (or a unique prefix)")
    p.add_argument("run_a", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("run_b", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--gamma", type=float, default=0.05,
                   help="γ: the share of each run's pairs in its top set (by w); the overlap "
                        "of the two top sets is reported")

    def run(a) -> int:
        key_a, key_b = a.run or a.run_a, a.student_run or a.run_b
        if not key_a or not key_b:
            raise LLSError("transfer needs two runs: --run KEY (the teacher's) and "
                           "--student-run KEY (the student's, on the same pairs).")
        res = compare_runs(open_run(key_a, a.cache), open_run(key_b, a.cache), a.gamma)
        print(json.dumps(res, indent=1, default=float))
        return 0

    p.set_defaults(func=run)
