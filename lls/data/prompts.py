"""Prompts without answers: where sampled pairs get their prompts (`lls.scoring.sampled`).

A `PromptSource` is a preference dataset (only its prompts are used; any shape `lls.data`
reads), a plain prompt file (one prompt per line in a .txt file, or JSONL / JSON / CSV /
parquet records with a `prompt` field holding a string or a list of messages), or a bundled
prompt set (`lls.core.prompts`). `iter_prompts` reads sources in order into one stream of
`PromptItem`s with its own hygiene: single-turn prompts only, unless `first_turn` keeps the
first user turn of longer conversations; empty, too long and repeated prompts are dropped
and counted. The stream never depends on a behavior, so the answers sampled for it can be
shared by every behavior's run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core import prompts as bundled
from ..core.cache import file_sha256, fingerprint
from ..core.errors import DataError
from .hygiene import HygieneReport, count_prompt_tokens
from .readers import infer_format, iter_local, open_binary
from .source import DataSpec, check_rows

KINDS = ("dataset", "file", "set")
PROMPT_SETS = {"general": bundled.GENERAL_PROMPTS, "probe": bundled.PROBE_QUESTIONS,
               "llr": bundled.LLR_PROMPTS}
# The bundled sets are the read-outs' own questions (sampled evaluation, the preference probe,
# the likelihood-ratio reference): training on them measures the effect in-sample.
READOUT_WARNING = ("the bundled prompt set {name!r} holds the questions an evaluation reads "
                   "the behavior on; pairs sampled from it make that evaluation in-sample")


@dataclass(frozen=True)
class PromptSource:
    """One place prompts come from. `kind`: "dataset" (`data`: how to read it), "file" (`path`:
    a prompt file) or "set" (`path`: a bundled set name: general, probe, llr)."""

    kind: str
    path: str
    data: DataSpec | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DataError(f"Unknown prompt source kind {self.kind!r}: use one of "
                            f"{', '.join(KINDS)}.")
        if self.kind == "set" and self.path not in PROMPT_SETS:
            raise DataError(f"Unknown bundled prompt set {self.path!r}: the sets are "
                            f"{', '.join(PROMPT_SETS)}.")
        if self.kind == "dataset" and self.data is None:
            object.__setattr__(self, "data", DataSpec(self.path))

    @classmethod
    def dataset(cls, spec: DataSpec) -> "PromptSource":
        return cls("dataset", spec.path, spec)

    def name(self) -> str:
        """How ids and labels name the source: the file name, hub name or "bundled:<set>"."""
        if self.kind == "set":
            return f"bundled:{self.path}"
        if self.kind == "dataset":
            return self.data.source_name()
        return Path(self.path).name

    def fingerprint(self) -> str:
        """Content hash: the dataset spec's, the prompt file's bytes, or the set's text."""
        if self.kind == "dataset":
            return self.data.fingerprint()
        if self.kind == "set":
            return fingerprint("set", self.path, PROMPT_SETS[self.path])
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise DataError(f"Prompt file {path.resolve()} does not exist. Check the path "
                            f"(relative paths are resolved from {Path.cwd()}).")
        return fingerprint("file", path.name, file_sha256(path))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path,
                "data": asdict(self.data) if self.data is not None else None}

    @classmethod
    def from_dict(cls, d: dict) -> "PromptSource":
        data = DataSpec(**d["data"]) if d.get("data") else None
        return cls(d["kind"], d["path"], data)


@dataclass(frozen=True)
class PromptItem:
    """One prompt to sample answers for: id, source name and chat messages."""

    id: str
    source: str
    messages: list[dict]

    def text(self) -> str:
        """The messages as one canonical string (dedup key and per-prompt seed)."""
        return json.dumps(self.messages, ensure_ascii=False, sort_keys=True)


def _messages(value: Any) -> list[dict] | None:
    """A prompt field as messages: a string is one user turn; a list of {"role","content"}
    is kept; anything else is None (malformed)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                       and m.get("role") in ("system", "user", "assistant")
                                       for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return None


def _file_prompts(path: Path, report: HygieneReport) -> Iterator[tuple[str, list | None]]:
    """(where, messages or None if malformed) for each prompt of a prompt file."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".txt"):
        with open_binary(path) as f:
            for i, raw in enumerate(f, 1):
                line = raw.decode("utf-8", errors="replace").strip()
                if line:  # blank lines separate nothing: skipped, not counted
                    yield f"line {i}", [{"role": "user", "content": line}]
        return
    for row in iter_local(path, infer_format(path)):
        if row.record is None:
            if row.kind == "truncated":
                raise DataError(f"{path}: {row.error}")
            yield row.where, None
            continue
        if "prompt" not in row.record:
            raise DataError(f"{path}: {row.where} has no 'prompt' field (fields: "
                            f"{', '.join(map(str, row.record)) or 'none'}). A prompt file holds "
                            "one prompt per line (.txt) or records with a 'prompt' field.")
        yield row.where, _messages(row.record["prompt"])


def source_names(sources) -> list[str]:
    """Each source's name in prompt ids, unique within one run: two files of the same name
    in different folders (a/p.txt, b/p.txt) are "p.txt" and "p.txt#2", so their prompts'
    ids never collide (ids name pairs, and pairs align across runs by id)."""
    seen: dict[str, int] = {}
    out = []
    for src in sources:
        name = src.name()
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _raw_prompts(src: PromptSource, report: HygieneReport,
                 name: str | None = None) -> Iterator[tuple[str, list | None]]:
    """(id, messages or None when the row is broken) for every prompt of one source
    (`name`: the source's unique name in this run, `source_names`)."""
    name = name or src.name()
    if src.kind == "set":
        report.warnings.append(READOUT_WARNING.format(name=src.path))
        for i, q in enumerate(PROMPT_SETS[src.path]):
            yield f"{name}:{i}", [{"role": "user", "content": q}]
    elif src.kind == "file":
        path = Path(src.path).expanduser()
        if not path.is_file():
            raise DataError(f"Prompt file {path.resolve()} does not exist.")
        for where, msgs in _file_prompts(path, report):
            yield f"{name}:{where.replace(' ', '')}", msgs
    else:
        # a second dataset of the same name: its ids get the unique name in front
        own = (lambda pid: pid) if name == src.name() else (lambda pid: f"{name}:{pid}")
        for c in check_rows(src.data):
            if c.reason in ("malformed", "truncated"):
                if not src.data.skip_malformed:
                    raise DataError(f"{c.error} Fix or remove the row, or skip malformed rows.")
                yield own(c.pair_id), None
                continue
            # Ties, identical or 'both bad' pairs still have a usable prompt.
            yield own(c.pair_id), c.pair.prompt if c.pair is not None else None


def single_turn(messages: list[dict], first_turn: bool) -> list[dict] | None:
    """The messages as a single-turn prompt (system turns kept, then one user turn), or None
    when the conversation has more turns and `first_turn` is off (with it: its first user
    turn and the system turns before it)."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        return None
    if len(users) == 1 and users[0] == len(messages) - 1 and \
            all(m["role"] == "system" for m in messages[:-1]):
        return messages
    if not first_turn:
        return None
    head = [m for m in messages[:users[0]] if m["role"] == "system"]
    return head + [messages[users[0]]]


def iter_prompts(sources: list[PromptSource] | tuple[PromptSource, ...], *,
                 first_turn: bool = False, max_prompt_tokens: int | None = None,
                 tokenizer: Any = None, report: HygieneReport | None = None,
                 limit: int | None = None) -> Iterator[PromptItem]:
    """The clean prompts of `sources`, in order, each once; `report` counts prompts read,
    kept and dropped (malformed, empty, multi_turn, prompt_too_long, duplicate_prompt).
    `limit` stops after that many kept prompts."""
    if max_prompt_tokens is not None and tokenizer is None:
        raise DataError("max_prompt_tokens needs a tokenizer to count prompt tokens.")
    report = report if report is not None else HygieneReport()
    seen: set[str] = set()
    for src, name in zip(sources, source_names(sources)):
        for pid, msgs in _raw_prompts(src, report, name):
            if limit is not None and report.kept >= limit:
                return
            report.read += 1
            if msgs is None:
                report.drop("malformed", pid)
                continue
            msgs = single_turn(msgs, first_turn) if msgs else msgs
            if msgs is None:
                report.drop("multi_turn", pid)
                continue
            if not msgs or not msgs[-1]["content"].strip():
                report.drop("empty", pid)
                continue
            item = PromptItem(pid, name, msgs)
            if item.text() in seen:
                report.drop("duplicate_prompt", pid)
                continue
            if max_prompt_tokens is not None and \
                    count_prompt_tokens(tokenizer, msgs) > max_prompt_tokens:
                report.drop("prompt_too_long", pid)
                continue
            seen.add(item.text())
            report.kept += 1
            yield item
    if report.kept == 0:
        raise DataError(f"No usable prompts in {', '.join(s.name() for s in sources)}: "
                        f"{report.describe('prompts')}. What to do: {report.advice()}.")
