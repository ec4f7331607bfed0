"""`python -m lls transfer RUN_A RUN_B`: teacher vs student weight agreement."""

from __future__ import annotations

import json

from ..scoring.runs import open_run
from ..scoring.transfer import compare_runs


def register(sub) -> None:
    """`python -m lls transfer RUN_A RUN_B [--gamma G]`: print the comparison as JSON."""
    p = sub.add_parser("transfer", help="compare two scoring runs' weights (transfer diagnostic)")
    p.add_argument("run_a", help="scoring run key (or unique prefix), e.g. the teacher's")
    p.add_argument("run_b", help="the other run, e.g. the student's on the same pairs")
    p.add_argument("--gamma", type=float, default=0.05)

    def run(a) -> int:
        res = compare_runs(open_run(a.run_a, a.cache), open_run(a.run_b, a.cache), a.gamma)
        print(json.dumps(res, indent=1, default=float))
        return 0

    p.set_defaults(func=run)
