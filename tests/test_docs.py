"""The documentation stays a reference: a README that reads in five minutes, a command
reference generated from the parsers, links that resolve, and no build diary in any project
file (the product is described, not the sessions or issues that built it)."""

from __future__ import annotations

import importlib.util
import re

from conftest import ROOT

README_MAX_LINES = 250
# the project's pre-stop hook uses the same pattern (../shared/hooks/before-stop)
DIARY = re.compile(r"\bsession [0-9]+|\bissue [0-9]+|\bsessions [0-9]+", re.I)
SKIP_DIRS = {".git", ".venv", "cache", "tests", "__pycache__", ".pytest_cache"}
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")


def _project_files():
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file():
            yield path


def _cli_docs():
    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "scripts" / "cli_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_reads_in_five_minutes():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_no_project_file_outside_tests_speaks_of_sessions_or_issues():
    found = []
    for path in _project_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary (images)
        for n, line in enumerate(text.splitlines(), 1):
            if DIARY.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_the_diary_pattern_finds_what_the_hook_finds():
    for text in ("measured in session 8", "Sessions 10 and 11", "since issue 21", "ISSUE 3"):
        assert DIARY.search(text), text
    for text in ("a session's cache", "the issue tracker", "sessions of the app"):
        assert not DIARY.search(text), text


def test_readme_and_docs_do_not_say_today():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not re.search(r"\btoday\b", path.read_text(encoding="utf-8"), re.I), path.name


def test_cli_reference_is_current():
    mod = _cli_docs()
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == mod.render(), "docs/cli.md is stale: run python scripts/cli_docs.py"


def test_cli_reference_lists_every_command():
    from lls.cli import build_parser

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"\n## python -m lls {name}\n" in text, name


def _anchors(path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces
    to hyphens)."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_links_in_readme_and_docs_resolve():
    broken = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in LINK.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            dest = (path.parent / target) if target else path
            if not dest.exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{path.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken, "\n".join(broken)
