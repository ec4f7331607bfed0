"""Write docs/cli.md: every `python -m lls` command's `--help`, generated from the parsers.

    python scripts/cli_docs.py           # rewrite docs/cli.md
    python scripts/cli_docs.py --check   # exit 1 when docs/cli.md is not current

`tests/test_docs.py` fails while the file is stale, so a changed flag or help text comes with
its regenerated reference.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "cli.md"
WIDTH = "100"  # argparse wraps at $COLUMNS: fixed, so the file is the same on every terminal

HEAD = """# Command line reference

Every command of `python -m lls`, as its `--help` prints it. Generated from the parsers by
`python scripts/cli_docs.py`: do not edit by hand. Errors print one line, `error: ...`, and
exit with status 2. The README's command table says in one line what each is for.
"""


def _commands(parser: argparse.ArgumentParser, prog: str):
    """(prog, parser) of `parser` and every subcommand under it, depth first, each once
    (an alias names the same parser)."""
    yield prog, parser
    seen = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from _commands(sub, f"{prog} {name}")


def render() -> str:
    """docs/cli.md's text."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        sys.path.insert(0, str(ROOT))
        from lls.cli import build_parser

        parts = [HEAD]
        for prog, parser in _commands(build_parser(), "python -m lls"):
            parts.append(f"\n## {prog}\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        return "".join(parts)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when docs/cli.md differs from what the parsers print")
    a = ap.parse_args(argv)
    text = render()
    if a.check:
        current = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is not current: run python scripts/cli_docs.py",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
