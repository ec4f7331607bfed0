"""`python -m lls sample-pairs`: the model's own answers to prompts, scored as preference pairs.

    python -m lls sample-pairs --data hh.jsonl.gz --answers-per-prompt 4 --prompts 2500

Prompts come from datasets (`--data`, only their prompts), prompt files (`--prompt-file`)
and bundled sets (`--prompt-set`), read in that order; the run is an ordinary scoring run
(`lls.scoring.sampled`), listed by `python -m lls runs` and resumed by the same command.
"""

from __future__ import annotations

from ..data.prompts import PROMPT_SETS, PromptSource
from ..data.source import DataSpec
from ..scoring.runs import ScoreConfig
from ..scoring.sampled import SamplingSpec
from .common import (_kv_list, add_behavior_args, add_format_args, add_model_args, add_skip_arg,
                     add_split_args, add_teacher_args, alias, model_spec, teacher)
from .score import add_scoring_args, run_scoring


def sampling_spec(a) -> SamplingSpec:
    """The SamplingSpec the flags describe (dataset reading options apply to every --data)."""
    sources = [PromptSource.dataset(DataSpec(p, format=a.format, shape=a.shape,
                                             columns=_kv_list(a.columns), split=a.split,
                                             subset=a.subset, skip_malformed=a.skip_malformed))
               for p in a.data or []]
    sources += [PromptSource("file", p) for p in a.prompt_file or []]
    sets = a.prompt_set or []
    sources += [PromptSource("set", name) for name in (list(PROMPT_SETS) if "all" in sets
                                                       else sets)]
    return SamplingSpec(tuple(sources), k=a.answers_per_prompt, n_prompts=a.prompts or None,
                        answer_tokens=a.max_new_tokens or None, temperature=a.temperature,
                        seed=a.seed, first_turn=a.first_turn)


def cmd_sample_pairs(a) -> int:
    b, trait = teacher(a)
    cfg = ScoreConfig.sampled(sampling_spec(a), b, model=model_spec(a), teacher=trait,
                              truncation=a.truncation or None,
                              max_prompt_tokens=a.max_prompt_tokens or None,
                              filter_contaminated=not a.no_filter, chunk_size=a.chunk_size,
                              batch_tokens=a.batch_tokens, neutral=a.neutral)
    return run_scoring(cfg, a)


def register(sub) -> None:
    """Add `sample-pairs` to the `python -m lls` subparsers."""
    p = sub.add_parser(
        "sample-pairs",
        help="sample answers per prompt from the model and score every pair of them "
             "(no human labels needed; the result is an ordinary scoring run)")
    g = p.add_argument_group("prompts (at least one source; read in this order)")
    g.add_argument("--data", action="append", metavar="PATH",
                   help="a preference dataset (file or hub name) whose prompts are used; "
                        "repeat for several")
    g.add_argument("--prompt-file", action="append", metavar="PATH",
                   help="a prompt file: one prompt per line (.txt), or JSONL/JSON/CSV/parquet "
                        "records with a 'prompt' field; repeat for several")
    g.add_argument("--prompt-set", action="append", choices=[*PROMPT_SETS, "all"],
                   help="a bundled prompt set (these are evaluation questions: training on "
                        "them makes that evaluation in-sample); repeat for several")
    g.add_argument("--first-turn", action="store_true",
                   help="also use the first user turn of multi-turn conversations (without "
                        "it: single-turn prompts only)")
    g.add_argument("--prompts", type=int, default=0,
                   help="stop after this many clean prompts (0, the default: all)")
    add_format_args(g)
    g.add_argument("--columns", help="column mapping for --data, e.g. prompt=question,...")
    add_split_args(g)
    add_skip_arg(g)
    g = p.add_argument_group("sampling")
    alias(g, g.add_argument("--answers-per-prompt", type=int, default=4,
                            help="answers sampled per prompt: k answers make k(k-1)/2 pairs"),
          "--k")
    alias(g, g.add_argument("--max-new-tokens", type=int, default=0,
                            help="new tokens per answer (0, the default: as many as the "
                                 "truncation)"),
          "--answer-tokens")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_behavior_args(p)
    add_model_args(p)
    add_teacher_args(p)
    add_scoring_args(p, unit="prompts", chunk=32)
    p.set_defaults(func=cmd_sample_pairs)
