"""Every command's help: each option explained, its default printed once, the commands listed
in the top-level description, and the old spellings of renamed flags still accepted."""

from __future__ import annotations

import argparse
import re

import pytest

from lls.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) of the top level and of every subcommand, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _shown(parser):
    """The actions a reader sees in the help (not -h, not hidden aliases, not subcommands)."""
    return [a for a in parser._actions
            if a.help != argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction,
                                                                  argparse._SubParsersAction))]


def _rendered(parser, action) -> str:
    """The help text of one action as `--help` prints it (defaults expanded)."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def _problems(parser: argparse.ArgumentParser, path) -> list[str]:
    out = []
    for action in _shown(parser):
        name = "/".join((*path, action.option_strings[0] if action.option_strings
                         else action.dest))
        if not (action.help or "").strip():
            out.append(f"{name}: no help")
            continue
        text = _rendered(parser, action)
        said = re.findall(r"\bdefault\b", text, re.IGNORECASE)
        if len(said) > 1:
            out.append(f"{name}: the default said {len(said)} times: {text!r}")
        shown = re.search(r"\(default: ([^)]*)\)$", text)
        # a number said in the help and again as the default (a word default such as
        # "template" is rightly named where the help explains the choices)
        if shown and isinstance(action.default, (int, float)):
            before = text[:shown.start()]
            value = re.escape(shown.group(1))
            if re.search(rf"(?<![\w.]){value}(?![\w.])", before):
                out.append(f"{name}: the default {shown.group(1)} printed twice: {text!r}")
        meaningful = (action.option_strings and action.nargs != 0
                      and action.default not in (None, argparse.SUPPRESS, [], ""))
        if meaningful and not said:
            out.append(f"{name}: has a default ({action.default!r}) the help does not say")
    return out


def test_every_option_has_help_and_says_its_default_once():
    problems = [p for path, parser in _parsers(build_parser()) for p in _problems(parser, path)]
    assert not problems, "\n".join(problems)


def test_the_walk_finds_the_problems_it_looks_for():
    """The checks above fail on the faults they name (an option without help, a default
    printed twice by the formatter and the help text)."""
    from lls.cli.common import Parser

    p = Parser(prog="x")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--k", type=int, default=4, help="answers (default 4)")
    p.add_argument("--samples", type=int, default=100, help="answers (the paper's 100)")
    p.add_argument("--seed", type=int, default=0, help="seed")
    found = _problems(p, ("x",))
    assert any(f.startswith("x/--quiet: no help") for f in found)
    assert any(f.startswith("x/--samples: the default 100 printed twice") for f in found)
    assert not any(f.startswith("x/--seed") for f in found)
    assert "(default: 0)" in _rendered(p, p._actions[-1])
    twice = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    twice.add_argument("--k", type=int, default=4, help="answers (default 4)")
    assert any("said 2 times" in f for f in _problems(twice, ("y",)))


def test_the_description_lists_every_command():
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name in sub.choices
               if not re.search(rf"^  {re.escape(name)}\s", ap.description, re.MULTILINE)]
    assert not missing, f"commands missing from the description: {missing}"
    assert len(sub.choices) >= 13


# (command, old spelling and value, new spelling and value, destination)
RENAMED = [
    ("eval", ["--meter-k", "8"], ["--reference-responses", "8"], "reference_responses"),
    ("eval", ["--meter-questions", "3"], ["--questions", "3"], "questions"),
    ("eval", ["--meter-max-new-tokens", "9"], ["--reference-tokens", "9"], "reference_tokens"),
    ("eval", ["--meter-prefill", "2"], ["--prefill-samples", "2"], "prefill_samples"),
    ("meter", ["--k", "8"], ["--reference-responses", "8"], "reference_responses"),
    ("meter", ["--max-new-tokens", "9"], ["--reference-tokens", "9"], "reference_tokens"),
    ("sample-pairs", ["--k", "3"], ["--answers-per-prompt", "3"], "answers_per_prompt"),
    ("sample-pairs", ["--answer-tokens", "7"], ["--max-new-tokens", "7"], "max_new_tokens"),
    ("trait", ["--prompts", "p.txt"], ["--prompt-file", "p.txt"], "prompt_file"),
    ("study create s --run r", ["--sample-questions", "5"], ["--questions", "5"], "questions"),
    ("study create s --run r", ["--sample-n", "6"], ["--samples", "6"], "samples"),
    ("study create s --run r", ["--sample-max-new-tokens", "7"], ["--max-new-tokens", "7"],
     "max_new_tokens"),
    ("study create s --run r", ["--scheduler", "linear"], ["--lr-scheduler", "linear"],
     "lr_scheduler"),
    ("train --run r", ["--meter-k", "8"], ["--reference-responses", "8"], "meter_k"),
    ("train --run r", ["--meter-questions", "3"], ["--questions", "3"], "meter_questions"),
    ("train --run r", ["--eval-samples", "2"], ["--samples", "2"], "eval_samples"),
    ("train --run r", ["--eval-prompts", "2"], ["--prompts", "2"], "eval_prompts"),
    ("train --run r", ["--eval-max-new-tokens", "9"], ["--max-new-tokens", "9"],
     "eval_max_new_tokens"),
    ("train --run r", ["--max-prompt-length", "99"], ["--max-prompt-tokens", "99"],
     "max_prompt_length"),
    ("transfer", ["A", "B"], ["--run", "A", "--student-run", "B"], None),
]


@pytest.mark.parametrize("command,old,new,dest", RENAMED,
                         ids=[f"{c.split()[0]} {o[0]}" for c, o, _, _ in RENAMED])
def test_old_spellings_still_work_and_stay_hidden(command, old, new, dest):
    ap = build_parser()
    a_old = vars(ap.parse_args([*command.split(), *old]))
    a_new = vars(ap.parse_args([*command.split(), *new]))
    if dest is None:  # transfer: positional runs became --run / --student-run
        assert (a_old["run_a"], a_old["run_b"]) == (a_new["run"], a_new["student_run"])
    else:
        assert a_old == a_new and a_new[dest] == ([new[1]] if dest == "prompt_file" else
                                                  type(a_new[dest])(new[1]))
    sub = ap
    for word in command.split():
        subs = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        sub = subs[0].choices[word]
    if old[0].startswith("-"):
        help_text = sub.format_help()
        assert not re.search(rf"(?<![\w-]){re.escape(old[0])}(?![\w-])", help_text), old[0]


def test_an_unchanged_default_of_a_renamed_flag_is_the_new_one():
    """The hidden alias never overrides the default the visible flag sets."""
    a = build_parser().parse_args(["eval"])
    assert (a.reference_responses, a.questions, a.reference_tokens, a.prefill_samples) == \
        (64, None, 48, 10)
    a = build_parser().parse_args(["sample-pairs"])
    assert (a.answers_per_prompt, a.max_new_tokens) == (4, 0)
