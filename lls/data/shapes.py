"""Record shapes: turning one source row (a dict) into a `Pair`.

Four shapes are understood (see docs/data.md, "Shapes"):

* ``transcript``  HH-style: ``chosen``/``rejected`` are whole conversations with turns
  introduced by ``"\\n\\nHuman: "`` and ``"\\n\\nAssistant: "`` (Anthropic/hh-rlhf).
* ``messages``    ``chosen``/``rejected`` are chat message lists that include the prompt
  turns (tulu 2.5, ultrafeedback_binarized); an optional ``prompt`` column is used when the
  lists hold only the answer.
* ``columns``     ``prompt`` (or ``question``), optional ``system``, ``chosen``, ``rejected``
  (Intel/orca_dpo_pairs). Values that are JSON lists of turns are parsed as turns.
* ``pairwise``    a comparison export: two responses (``response_a``/``response_b`` or
  ``conversation_a``/``conversation_b``) and who won (``winner_model_a``/``winner_model_b``/
  ``winner_tie`` flags, or one ``winner`` column: ``preference`` only when mapped). The winner
  becomes chosen; ties and "both bad" are hygiene drops. Numbers in a ``winner`` column have
  no common meaning (an index from 0 or 1, an "A won" flag), so they need
  ``DataSpec.winner_codes``; without it they are a whole-source `DataError`.

Multi-turn comparisons (``conversation_a``/``conversation_b`` message lists, or ``prompt``,
``response_a``, ``response_b`` as JSON lists of turns, prompt[i] being the user turn that
response[i] answers) are read at the first assistant turn where the two sides differ: the turns
they share before it are the prompt, and each side's answer there is its response, so the
loser's answer is never conditioned on the winner's history. Later turns are not used.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..core.errors import DataError
from ..core.pair import Pair

SHAPES = ("transcript", "messages", "columns", "pairwise")
CANONICAL_COLUMNS = ("prompt", "system", "chosen", "rejected", "id", "response_a", "response_b",
                     "winner")
# Default source column names tried, in order, for each canonical name.
_DEFAULT_SOURCES = {"prompt": ("prompt", "question"), "system": ("system",),
                    "chosen": ("chosen",), "rejected": ("rejected",), "id": ("id",),
                    "response_a": ("response_a", "conversation_a"),
                    "response_b": ("response_b", "conversation_b"),
                    "winner": ("winner",)}
# Arena-style one-hot winner flags (used when there is no single winner column): 1 marks
# the winner; with only one side's flag, 0 means the other side won (unless winner_tie is 1).
WINNER_FLAGS = ("winner_model_a", "winner_model_b", "winner_tie")
# What a winner code can stand for (DataSpec.winner_codes maps source values to these).
WINNER_SIDES = ("a", "b", "tie", "both_bad")
_WINNER_VALUES = {"model_a": "a", "a": "a", "response_a": "a",
                  "model_b": "b", "b": "b", "response_b": "b",
                  "tie": "tie", "both_good": "tie",
                  "tie (bothbad)": "both_bad", "both_bad": "both_bad", "bothbad": "both_bad",
                  "tie(bothbad)": "both_bad"}
_HUMAN = "\n\nHuman: "
_ASSISTANT = "\n\nAssistant: "
_TURN_RE = re.compile(r"\n\n(Human|Assistant): ")
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant",
                 "user": "user", "assistant": "assistant", "system": "system"}
COLUMNS_ADVICE = ("Map your column names (command line: --columns chosen=<col>,rejected=<col>,"
                  "prompt=<col>; Setup page: 'Map your columns').")


class Malformed(Exception):
    """A row that cannot be turned into a pair; becomes a DataError or a 'malformed' drop."""


class AmbiguousWinner(Exception):
    """Numbers in a winner column and no coding given: a whole-source DataError (never a
    skippable malformed row, which would silently drop or flip pairs)."""


def resolve_columns(explicit: dict[str, str] | None, record: dict, where: str,
                    display: str) -> dict[str, str | None]:
    """canonical name -> source column (None when absent), from `explicit` and the defaults."""
    explicit = dict(explicit or {})
    mapping: dict[str, str | None] = {}
    for name in CANONICAL_COLUMNS:
        if name in explicit:
            mapping[name] = explicit[name]
        else:
            mapping[name] = next((c for c in _DEFAULT_SOURCES[name] if c in record), None)
    missing = [f"{name}={src!r}" for name, src in explicit.items() if src not in record]
    if missing:
        raise DataError(missing_message(display, record, where, missing))
    if has_winner(record, mapping):
        # A comparison export mapped as chosen=response_a, rejected=response_b: the winner
        # columns decide the direction, so the mapped columns are the two responses.
        for side, canon in (("response_a", "chosen"), ("response_b", "rejected")):
            if side not in explicit and canon in explicit:
                mapping[side] = explicit[canon]
    return mapping


def has_winner(record: dict, mapping: dict[str, str | None]) -> bool:
    """True when the row says which of two responses won (a winner column or Arena flags)."""
    return mapping["winner"] is not None or any(f in record for f in WINNER_FLAGS[:2])


def missing_message(display: str, record: dict, where: str, missing: list[str]) -> str:
    """The error for required columns that are not there, listing the columns found."""
    found = ", ".join(map(str, record)) or "(none)"
    return (f"{display}: {where}: missing column(s) {', '.join(missing)}. Columns found: "
            f"{found}. Expected chosen and rejected (plus prompt or question for plain "
            "columns; optional system, id), or response_a, response_b and a winner for a "
            f"comparison export. {COLUMNS_ADVICE}")


def detect_shape(record: dict, mapping: dict[str, str | None], where: str, display: str) -> str:
    """The shape of `record` (see module docstring), or a DataError saying how to choose one."""
    if mapping["response_a"] and mapping["response_b"] and (
            has_winner(record, mapping) or mapping["chosen"] is None):
        return "pairwise"  # without a winner, check_required asks the user to name one
    chosen_col = mapping["chosen"]
    if chosen_col is None or mapping["rejected"] is None:
        return "columns"  # check_required reports the missing columns
    chosen = record[chosen_col]
    if _as_message_list(chosen) is not None:
        return "messages"
    if mapping["prompt"] is not None:
        return "columns"
    if isinstance(chosen, str) and ("Assistant:" in chosen or chosen.lstrip().startswith("Human:")):
        return "transcript"
    raise DataError(
        f"{display}: {where}: cannot tell the record shape (columns found: "
        f"{', '.join(map(str, record))}). chosen is neither a message list nor an HH-style "
        "transcript, and there is no prompt/question column. Map the prompt column "
        "(command line: --columns prompt=<col>; Setup page: 'Map your columns') or choose "
        "the shape (command line: --shape; Setup page: the Shape box under 'Map your columns').")


def check_required(record: dict, mapping: dict[str, str | None], shape: str, where: str,
                   display: str) -> None:
    """A DataError naming the columns `shape` needs that the first row lacks."""
    if shape == "pairwise":
        missing = [n for n in ("response_a", "response_b") if mapping[n] is None]
        if not has_winner(record, mapping):
            missing.append("winner (or winner_model_a/winner_model_b: name the column that "
                           "says which response won, e.g. --columns winner=preference)")
    else:
        missing = [n for n in ("chosen", "rejected") if mapping[n] is None]
        if shape == "columns" and mapping["prompt"] is None:
            missing.insert(0, "prompt (or question)")
    if missing:
        raise DataError(missing_message(display, record, where, missing))


def row_id(record: dict, mapping: dict[str, str | None], source: str, row_index: int) -> str:
    """The pair id: the id column's value, else "<source>:<row index>"."""
    col = mapping["id"]
    if col is not None:
        value = record.get(col)
        if value is not None and str(value) != "":
            return str(value)
    return f"{source}:{row_index}"


def _get(record: dict, col: str | None, required: bool = True) -> Any:
    if col is None:
        return None
    if col not in record:
        if not required:
            return None  # optional columns (system, id, ...) may be absent in some rows
        raise Malformed(f"missing column {col!r} (found: {', '.join(map(str, record))}).")
    return record[col]


def winner_code(value: Any) -> str:
    """How a winner value is looked up: lower-cased text, numbers without a float's ".0"
    (parquet and pandas read 1 as 1.0), booleans as 1/0."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    key = str(value).strip().lower()
    if _is_number(key) and float(key).is_integer():
        return str(int(float(key)))
    return key


def _is_number(key: str) -> bool:
    try:
        float(key)
    except ValueError:
        return False
    return True


def describe_codes(codes: dict[str, str]) -> str:
    """'0=a, 1=b, 2=tie': a winner coding as the user wrote it."""
    return ", ".join(f"{k}={v}" for k, v in codes.items())


def winner(record: dict, mapping: dict[str, str | None],
           codes: dict[str, str] | None = None) -> str:
    """"a", "b", "tie" or "both_bad" from the winner column or the Arena one-hot flags.

    `codes` (DataSpec.winner_codes) maps the column's values to sides; text values
    (model_a, model_b, tie, tie (bothbad)) need none. Numbers without `codes` raise
    AmbiguousWinner.
    """
    if mapping["winner"] is not None:
        col = mapping["winner"]
        value = _get(record, col)
        key = winner_code(value)
        if codes and key in codes:
            return codes[key]
        if _is_number(key):
            if codes:
                raise Malformed(f"winner {value!r} is not one of the winner codes given "
                                f"({describe_codes(codes)}).")
            raise AmbiguousWinner(
                f"the winner column {col!r} holds numbers ({value!r}), and exports code them "
                "differently: 0/1 can be the winner's index counted from 0 (0 = response_a, "
                "1 = response_b, 2 = tie, as class labels) or an 'A won' flag (1 = "
                "response_a, 0 = response_b); 1/2 the index counted from 1 (1 = response_a, "
                "2 = response_b) or from 0 (1 = response_b, 2 = tie). Say which: command "
                "line --winner-codes 0=a,1=b (each code maps to a, b, tie or both_bad).")
        if key not in _WINNER_VALUES:
            raise Malformed(f"winner {value!r} is not one of model_a, model_b, tie, "
                            "tie (bothbad) (or a, b).")
        return _WINNER_VALUES[key]
    flags = []
    for col in WINNER_FLAGS:
        value = record.get(col, 0)
        try:
            flags.append(bool(int(value or 0)))
        except (TypeError, ValueError):
            raise Malformed(f"{col} must be 0 or 1, got {value!r}.") from None
    a_col, b_col, _ = WINNER_FLAGS
    if b_col not in record:  # only "model A won" is coded: 0 means B won (Arena's flag)
        flags[1] = not (flags[0] or flags[2])
    elif a_col not in record:
        flags[0] = not (flags[1] or flags[2])
    if sum(flags) != 1:
        raise Malformed(f"exactly one of {', '.join(WINNER_FLAGS)} must be 1, got "
                        f"{[int(f) for f in flags]}.")
    return ("a", "b", "tie")[flags.index(True)]


def _json_list(value: Any) -> list | None:
    """A non-empty list from a list, an array (parquet/pandas) or a JSON string holding a
    list; None for anything else."""
    if isinstance(value, str):
        s = value.lstrip()
        if not s.startswith("["):
            return None
        try:
            value = json.loads(s)
        except json.JSONDecodeError:
            return None
    if hasattr(value, "tolist") and not isinstance(value, list):
        value = value.tolist()  # numpy arrays from parquet/pandas
    return value if isinstance(value, list) and value else None


def text_turns(value: Any) -> list[str] | None:
    """A list of turns (strings; a JSON string holding such a list is parsed), else None."""
    value = _json_list(value)
    if value is None:
        return None
    if not all(v is None or isinstance(v, str) for v in value):
        return None
    return ["" if v is None else v for v in value]


def _aligned_turns(prompt_raw: Any, win_raw: Any, lose_raw: Any, win: str, lose: str
                   ) -> tuple[list[dict[str, str]], str, str] | None:
    """(prompt messages, chosen, rejected) when the responses are lists of turns, else None.

    prompt[i] is the user turn answered by response[i]; the pair is taken at the first turn
    where the answers differ (`first_difference`), the turns before it being the prompt.
    """
    w_turns, l_turns = text_turns(win_raw), text_turns(lose_raw)
    if w_turns is None and l_turns is None:
        return None
    if w_turns is None or l_turns is None:
        raise Malformed(f"{win if w_turns is None else lose} is not a list of turns while "
                        f"{lose if w_turns is None else win} is.")
    p_turns = text_turns(prompt_raw)
    if p_turns is None:
        if not isinstance(prompt_raw, str):
            raise Malformed("the prompt must be a string or a list of turns, got "
                            f"{type(prompt_raw).__name__}.")
        p_turns = [prompt_raw]
    if not (len(p_turns) == len(w_turns) == len(l_turns)):
        raise Malformed(f"the prompt has {len(p_turns)} turns but {win} has {len(w_turns)} and "
                        f"{lose} {len(l_turns)}: each prompt turn needs one answer per side.")
    split = first_difference(_conversation(p_turns, w_turns), _conversation(p_turns, l_turns))
    assert split is not None  # the user turns are shared, so the sides part at an answer
    return split


def _conversation(users: list[str], answers: list[str]) -> list[dict[str, str]]:
    """users[i] answered by answers[i], as alternating messages."""
    msgs: list[dict[str, str]] = []
    for question, answer in zip(users, answers):
        msgs += [{"role": "user", "content": question},
                 {"role": "assistant", "content": answer}]
    return msgs


def first_difference(win: list[dict[str, str]], lose: list[dict[str, str]]
                     ) -> tuple[list[dict[str, str]], str, str] | None:
    """(shared prompt, winner's answer, loser's answer) at the first message where two
    conversations that both end with an answer differ; identical conversations give their
    last answers. None when they part at a user turn or one stops before the other differs
    (no shared prompt that both answer)."""
    a, b = _strip_msgs(win), _strip_msgs(lose)
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if i == len(a) == len(b):
        i -= 1  # identical: compare the last answers (an "identical" drop)
    if i >= min(len(a), len(b)) or win[i]["role"] != "assistant" or \
            lose[i]["role"] != "assistant":
        return None
    return [dict(m) for m in win[:i]], win[i]["content"], lose[i]["content"]


def to_pair(record: dict, mapping: dict[str, str | None], shape: str, pair_id: str,
            source: str, winner_codes: dict[str, str] | None = None) -> tuple[str | None, Pair]:
    """Build the pair and return (hygiene drop reason or None, pair); Malformed if broken,
    AmbiguousWinner for numeric winners without `winner_codes`."""
    reason: str | None = None
    if shape == "pairwise":
        won = winner(record, mapping, winner_codes)
        first, second = ("response_b", "response_a") if won == "b" else ("response_a",
                                                                          "response_b")
        chosen_raw, rejected_raw = _get(record, mapping[first]), _get(record, mapping[second])
        names = (first, second)
        if won in ("tie", "both_bad"):
            reason = won
    else:
        chosen_raw = _get(record, mapping["chosen"])
        rejected_raw = _get(record, mapping["rejected"])
        names = ("chosen", "rejected")
    system = _get(record, mapping["system"], required=False)
    if system is not None and not isinstance(system, str):
        raise Malformed(f"system must be a string, got {type(system).__name__}.")
    prompt_raw = _get(record, mapping["prompt"], required=shape == "columns")
    if shape == "transcript":
        c_prompt, chosen = _split_transcript(chosen_raw, "chosen")
        r_prompt, rejected = _split_transcript(rejected_raw, "rejected")
        if c_prompt != r_prompt:
            reason = "different_prompts"
        prompt = _parse_transcript_prompt(c_prompt)
    else:
        turns = (None if shape == "messages" else
                 _aligned_turns(prompt_raw, chosen_raw, rejected_raw, *names))
        if turns is not None:
            prompt, chosen, rejected = turns
        elif shape == "columns":
            prompt = _prompt_messages(prompt_raw)
            chosen = _response_text(chosen_raw, "chosen", shape)
            rejected = _response_text(rejected_raw, "rejected", shape)
        else:  # messages, or a pairwise export of message lists (conversation_a/b)
            prompt, chosen, rejected, same = _messages_prompt(chosen_raw, rejected_raw,
                                                              prompt_raw,
                                                              shared_prefix=shape == "pairwise")
            if not same and reason is None:
                reason = "different_prompts"
    if system and system.strip() and not (prompt and prompt[0]["role"] == "system"):
        prompt = [{"role": "system", "content": system}] + prompt
    user_turns = [m for m in prompt if m["role"] == "user"]
    # A prompt from a pair whose two sides disagree is dropped anyway: no shape check.
    if reason is None and prompt and prompt[-1]["role"] != "user" and user_turns:
        raise Malformed(f"the prompt must end with a user turn, it ends with "
                        f"{prompt[-1]['role']!r}.")
    pair = Pair(id=pair_id, prompt=prompt, chosen=chosen, rejected=rejected, source=source)
    if reason is None:
        if (not user_turns or not any(m["content"].strip() for m in user_turns)
                or not chosen.strip() or not rejected.strip()):
            reason = "empty"
        elif chosen.strip() == rejected.strip():
            reason = "identical"
    return reason, pair


def _split_transcript(text: Any, name: str) -> tuple[str, str]:
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise Malformed(f"{name} must be a transcript string, got {type(text).__name__}.")
    if text.startswith("Human: "):
        text = "\n\n" + text  # some copies drop the leading blank line
    cut = text.rfind(_ASSISTANT)
    if cut < 0:
        raise Malformed(f"{name} has no {_ASSISTANT!r} turn, so the response cannot be "
                         "found; is this HH-style data (shape='transcript')?")
    cut += len(_ASSISTANT)
    # Responses are stripped: the marker's trailing space is often doubled in hh-rlhf.
    return text[:cut], text[cut:].strip()


def _parse_transcript_prompt(prefix: str) -> list[dict[str, str]]:
    """Turn "\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant: " into messages."""
    body = prefix[: -len(_ASSISTANT)]
    parts = _TURN_RE.split(body)
    messages: list[dict[str, str]] = []
    if parts[0].strip():
        # Text before the first turn marker acts as a preamble: keep it as a system turn.
        messages.append({"role": "system", "content": parts[0].strip()})
    for label, content in zip(parts[1::2], parts[2::2]):
        role = "user" if label == "Human" else "assistant"
        content = content.strip()
        if messages and messages[-1]["role"] == role:
            # A few hh-rlhf transcripts repeat a speaker; merge so roles alternate.
            messages[-1]["content"] = (messages[-1]["content"] + "\n\n" + content).strip()
        else:
            messages.append({"role": role, "content": content})
    return messages


def _as_message_list(value: Any) -> list[dict[str, str]] | None:
    """The value as normalised chat messages, or None if it is not a message list."""
    value = _json_list(value)
    if value is None:
        return None
    out = []
    for m in value:
        if not isinstance(m, dict):
            return None
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if not isinstance(role, str) or role.lower() not in _ROLE_ALIASES:
            return None
        if content is None:
            content = ""
        if not isinstance(content, str):
            return None
        out.append({"role": _ROLE_ALIASES[role.lower()], "content": content})
    return out


def _strip_msgs(msgs: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"].strip()) for m in msgs]


def _messages_prompt(chosen_raw: Any, rejected_raw: Any, prompt_raw: Any,
                     shared_prefix: bool = False) -> tuple[list[dict[str, str]], str, str, bool]:
    """(prompt, chosen, rejected, prompts agree) for the messages shape.

    `shared_prefix` (comparison exports): two whole conversations are compared at the first
    answer where they differ (`first_difference`) instead of at their last turns.
    """
    prompts: list[list[dict[str, str]]] = []
    responses: list[str] = []
    for name, raw in (("chosen", chosen_raw), ("rejected", rejected_raw)):
        msgs = _as_message_list(raw)
        if msgs is None:
            responses.append(_response_text(raw, name, "messages"))
            prompts.append([])
            continue
        if msgs[-1]["role"] != "assistant":
            raise Malformed(f"the last message of {name} must be the assistant's answer, it "
                             f"is a {msgs[-1]['role']!r} turn.")
        responses.append(msgs[-1]["content"])
        prompts.append(msgs[:-1])
    c_prompt, r_prompt = prompts
    if shared_prefix and c_prompt and r_prompt:
        chosen_msgs = c_prompt + [{"role": "assistant", "content": responses[0]}]
        rejected_msgs = r_prompt + [{"role": "assistant", "content": responses[1]}]
        split = first_difference(chosen_msgs, rejected_msgs)
        if split is not None and split[0]:
            return split[0], split[1], split[2], True
    same = True
    if c_prompt and r_prompt:
        same = _strip_msgs(c_prompt) == _strip_msgs(r_prompt)
    prompt = c_prompt or r_prompt
    if not prompt:
        if prompt_raw is None:
            raise Malformed("chosen/rejected hold only the answer and there is no prompt "
                            "column; map one (command line: --columns prompt=<column>; Setup "
                            "page: the prompt column box).")
        prompt = _prompt_messages(prompt_raw)
    return [dict(m) for m in prompt], responses[0], responses[1], same


def _prompt_messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if isinstance(value, str):
        msgs = _as_message_list(value) if value.lstrip().startswith("[") else None
        if msgs is None:
            turns = text_turns(value)
            if turns is not None and len(turns) > 1:
                raise Malformed(f"the prompt is a list of {len(turns)} turns but the responses "
                                "are single strings, so the earlier answers are unknown.")
            if turns is not None:
                return [{"role": "user", "content": turns[0]}]
        return msgs if msgs is not None else [{"role": "user", "content": value}]
    msgs = _as_message_list(value)
    if msgs is None:
        raise Malformed(f"prompt must be a string or a list of chat messages, got "
                         f"{type(value).__name__}.")
    return msgs


def _response_text(value: Any, name: str, shape: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        raise Malformed(f"{name} is a list that is neither chat messages nor a list of turns "
                        "(strings)." if shape == "columns" else
                        f"{name} is not a valid message list.")
    raise Malformed(f"{name} must be a string, got {type(value).__name__}.")
