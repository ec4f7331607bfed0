"""Argument groups and parsing helpers shared by the commands (data, behavior, model), the
help formatter every command uses (each default printed once) and hidden old spellings.

One name per idea across the commands: `--questions` (read-out questions), `--samples`
(answers sampled per prompt or question), `--max-new-tokens` (tokens per sampled answer),
`--reference-responses` / `--reference-tokens` (the likelihood ratio's reference set),
`--prefill-samples` (prefilled answers per question), `--run` (a scoring run key).
An old spelling stays for one release as a hidden alias (`alias`).
"""

from __future__ import annotations

import argparse
import copy

from ..core.behaviors import Behavior, custom, from_name
from ..core.errors import LLSError
from ..data.source import SHAPES, DataSpec
from ..models.load import DTYPE_CHOICES, ModelSpec


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default printed once, as "(default: X)", unless its help already says
    what the default is; switches (no value) and options without a default print none. The
    description keeps its line breaks (the command list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if text == argparse.SUPPRESS or "default" in text.lower() or action.nargs == 0:
            return text
        if action.default in (None, argparse.SUPPRESS, [], "") or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help uses `HelpFormatter`; subcommands inherit it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def alias(container, action: argparse.Action, *old: str) -> None:
    """Accept the `old` spellings of `action`'s option, hidden from the help (kept for one
    release after a rename): they store into the same destination."""
    hidden = copy.copy(action)
    hidden.option_strings = list(old)
    hidden.help = argparse.SUPPRESS
    hidden.default = argparse.SUPPRESS  # the new spelling sets the default
    hidden.required = False
    container._add_action(hidden)


def add_run_arg(p, required: bool = True, flag: str = "--run",
                help: str = "scoring run key, or a unique prefix of it "
                            "(`python -m lls runs` lists them)") -> argparse.Action:
    """The scoring run a command reads (the same flag everywhere)."""
    return p.add_argument(flag, required=required, metavar="KEY", help=help)


GAMMA_HELP = "γ: the share of scored pairs kept, the top ones by w"


def _kv_list(text: str | None, option: str = "--columns",
             example: str = "prompt=question,chosen=good") -> dict[str, str] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise LLSError(f"{option} expects key=value pairs like {example!r}, got {part!r}.")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def add_data_args(p: argparse.ArgumentParser, required: bool = True,
                  hub_subset: str = "--subset") -> None:
    """The data options; `hub_subset`: the flag naming a hub dataset's data_dir / config
    (a command whose --subset means something else renames it)."""
    g = p.add_argument_group("data")
    g.add_argument("--data", required=required,
                   help="local file (jsonl/json/csv/parquet, optionally .gz) or hub dataset name")
    add_format_args(g)
    g.add_argument("--columns", help="column mapping, e.g. prompt=question,chosen=good,"
                                     "rejected=bad or (a comparison export) response_a=..,"
                                     "response_b=..,winner=..")
    g.add_argument("--winner-codes",
                   help="what a comparison export's numeric winner values mean, e.g. 0=a,1=b "
                        "or 1=a,2=b,0=tie (sides: a, b, tie, both_bad)")
    add_split_args(g, hub_subset)
    g.add_argument("--limit", type=int, help="stop after this many kept pairs (default: all)")
    add_skip_arg(g)


def add_format_args(g) -> None:
    """--format and --shape: how a data file is read (default: from its name and fields)."""
    g.add_argument("--format", choices=["jsonl", "json", "csv", "parquet"],
                   help="the file's format (default: from its name)")
    g.add_argument("--shape", choices=list(SHAPES),
                   help="how records hold a pair: transcript (two conversations), messages "
                        "(prompt + chosen/rejected message lists), columns (prompt, chosen, "
                        "rejected text) or pairwise (two responses and a winner) (default: "
                        "recognised from the fields)")


def add_split_args(g, subset: str = "--subset") -> None:
    """--split and --subset of a hub dataset (`subset`: the flag's name)."""
    g.add_argument("--split", default="train", help="the hub dataset's split")
    g.add_argument(subset, dest="subset", help="the hub dataset's data folder or configuration, e.g. "
                                    "harmless-base (default: none)")


def add_skip_arg(g) -> None:
    g.add_argument("--skip-malformed", action="store_true",
                   help="count and skip broken rows (bad JSON, bad UTF-8, missing fields, a "
                        "truncated .gz tail) instead of stopping; the hygiene report counts them")


FILTER_HELP = {
    "pairs": "comma-separated words: pairs mentioning them are dropped before scoring "
             "(default: the behavior's, e.g. owl, owls)",
    "answers": "comma-separated words that count as showing the behavior: an answer that "
               "mentions one is a hit (default: the behavior's, e.g. owl, owls)",
}


def add_behavior_args(p: argparse.ArgumentParser, filters: str = "pairs") -> None:
    """--behavior, --system-prompt, --filter-words, --regex. `filters`: what the filter words
    act on in this command: "pairs" (scoring drops them) or "answers" (they count as hits)."""
    g = p.add_argument_group("target behavior")
    g.add_argument("--behavior", default="animal:owl",
                   help="a preset: animal:NAME, translation:LANG or persona:evil-ruler")
    g.add_argument("--system-prompt", help="a custom system prompt (instead of --behavior's)")
    g.add_argument("--filter-words", help=FILTER_HELP[filters])
    g.add_argument("--regex", help="custom behavior: a regular expression an answer matches "
                                   "when it shows the behavior")


def add_model_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    g = p.add_argument_group("model")
    g.add_argument(f"--{prefix}model", default="bundled:SmolLM2-135M-Instruct",
                   help="hub id, local directory or .gguf file")
    g.add_argument(f"--{prefix}gguf-file", help="GGUF file name inside --model")
    g.add_argument(f"--{prefix}revision", help="the hub model's branch, tag or commit "
                                               "(default: main)")
    g.add_argument(f"--{prefix}device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument(f"--{prefix}trust-remote-code", action="store_true",
                   help="run Python code shipped with the model's repository (only for "
                        "repositories you trust)")
    g.add_argument(f"--{prefix}dtype", choices=DTYPE_CHOICES, default="auto",
                   help="numeric precision: auto (bfloat16 on CUDA and on CPUs with bfloat16 "
                        "units, avx512_bf16 or amx_bf16; float32 elsewhere), float32 or "
                        "bfloat16. Results of each precision are cached apart")


def data_spec(a):
    return DataSpec(a.data, format=a.format, shape=a.shape, columns=_kv_list(a.columns),
                    split=a.split, subset=a.subset, limit=a.limit,
                    skip_malformed=getattr(a, "skip_malformed", False),
                    winner_codes=_kv_list(getattr(a, "winner_codes", None), "--winner-codes",
                                          "0=a,1=b"))


def behavior(a):
    words = tuple(w.strip() for w in (a.filter_words or "").split(",") if w.strip())
    if a.system_prompt:
        return custom(a.system_prompt, filter_words=words, regex=a.regex)
    b = from_name(a.behavior)
    if words:
        b = Behavior.from_dict({**b.to_dict(), "filter_words": list(words)})
    return b


def add_teacher_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """What carries the trait: the behavior's system prompt (default), another prompt for
    the same behavior, a LoRA adapter over the base model, or a fine-tuned model."""
    g = p.add_argument_group("teacher (what carries the trait; default: the behavior's "
                             "system prompt)")
    action = "append" if many else "store"
    g.add_argument("--teacher-prompt", action=action, metavar="TEXT",
                   help="the teacher's system prompt for this behavior, instead of the "
                        "preset's (the behavior's filter words and read-outs stay)"
                        + (" (repeatable: compared side by side)" if many else ""))
    g.add_argument("--teacher-adapter", action=action, metavar="DIR",
                   help="a peft LoRA adapter over the base model that carries the trait "
                        "(safetensors; e.g. one made by `python -m lls trait`): scored "
                        "on/off, no system prompt")
    g.add_argument("--teacher-model", action=action, metavar="MODEL",
                   help="a fine-tuned model with the base's tokenizer that carries the "
                        "trait: scored against the base, no system prompt")


def teacher(a):
    """(behavior, Teacher or None) from the behavior and teacher options (single values)."""
    from ..models.teacher import Teacher

    b = behavior(a)
    given = [(k, v) for k, v in (("prompt", a.teacher_prompt), ("adapter", a.teacher_adapter),
                                 ("model", a.teacher_model)) if v]
    if len(given) > 1:
        raise LLSError("Give one teacher: --teacher-prompt, --teacher-adapter or "
                       "--teacher-model, not several.")
    if not given:
        return b, None
    kind, value = given[0]
    if kind == "prompt":
        return with_prompt(b, value), None
    return b, Teacher(kind, value)


def with_prompt(b: Behavior, prompt: str) -> Behavior:
    """The behavior with another teacher system prompt (filter words, stem, metric kept)."""
    if not prompt.strip():
        raise LLSError("--teacher-prompt is empty: give the system prompt the teacher uses.")
    return Behavior.from_dict({**b.to_dict(), "system_prompt": prompt})


def model_spec(a, prefix: str = ""):
    get = lambda name: getattr(a, prefix.replace("-", "_") + name)  # noqa: E731
    dtype = getattr(a, prefix.replace("-", "_") + "dtype", "auto")
    return ModelSpec(get("model"), gguf_file=get("gguf_file"), revision=get("revision"),
                     device=get("device"), trust_remote_code=get("trust_remote_code"),
                     dtype=None if dtype == "auto" else dtype)


