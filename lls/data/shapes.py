"""Record shapes: turning one source row (a dict) into a `Pair`.

Four shapes are understood (see README "Supported data shapes"):

* ``transcript``  HH-style: ``chosen``/``rejected`` are whole conversations with turns
  introduced by ``"\\n\\nHuman: "`` and ``"\\n\\nAssistant: "`` (Anthropic/hh-rlhf).
* ``messages``    ``chosen``/``rejected`` are chat message lists that include the prompt
  turns (tulu 2.5, ultrafeedback_binarized); an optional ``prompt`` column is used when the
  lists hold only the answer.
* ``columns``     ``prompt`` (or ``question``), optional ``system``, ``chosen``, ``rejected``
  (Intel/orca_dpo_pairs). Values that are JSON lists of turns are parsed as turns.
* ``pairwise``    a comparison export: two responses (``response_a``/``response_b`` or
  ``conversation_a``/``conversation_b``) and who won (``winner_model_a``/``winner_model_b``/
  ``winner_tie`` flags, or one ``winner`` column). The winner becomes chosen; ties and
  "both bad" are hygiene drops.

Lists of turns (Chatbot Arena: ``prompt``, ``response_a``, ``response_b`` as JSON lists of
strings) are aligned turn by turn: prompt[i] is a user turn and response[i] the assistant's
answer to it; the last response turn is the one compared, and the earlier turns of the
chosen side form the conversation history.
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
                    "winner": ("winner", "preference")}
# Arena-style one-hot winner flags (used when there is no single winner column).
WINNER_FLAGS = ("winner_model_a", "winner_model_b", "winner_tie")
_WINNER_VALUES = {"model_a": "a", "a": "a", "response_a": "a", "1": "a",
                  "model_b": "b", "b": "b", "response_b": "b", "2": "b",
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
    return mapping["winner"] is not None or all(f in record for f in WINNER_FLAGS[:2])


def missing_message(display: str, record: dict, where: str, missing: list[str]) -> str:
    """The error for required columns that are not there, listing the columns found."""
    found = ", ".join(map(str, record)) or "(none)"
    return (f"{display}: {where}: missing column(s) {', '.join(missing)}. Columns found: "
            f"{found}. Expected chosen and rejected (plus prompt or question for plain "
            "columns; optional system, id), or response_a, response_b and a winner for a "
            f"comparison export. {COLUMNS_ADVICE}")


def detect_shape(record: dict, mapping: dict[str, str | None], where: str, display: str) -> str:
    """The shape of `record` (see module docstring), or a DataError saying how to choose one."""
    if has_winner(record, mapping) and mapping["response_a"] and mapping["response_b"]:
        return "pairwise"
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
            missing.append("winner (or winner_model_a/winner_model_b)")
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


def winner(record: dict, mapping: dict[str, str | None]) -> str:
    """"a", "b", "tie" or "both_bad" from the winner column or the Arena one-hot flags."""
    if mapping["winner"] is not None:
        value = _get(record, mapping["winner"])
        key = str(value).strip().lower()
        if key not in _WINNER_VALUES:
            raise Malformed(f"winner {value!r} is not one of model_a, model_b, tie, "
                            "tie (bothbad) (or a, b, 1, 2).")
        return _WINNER_VALUES[key]
    flags = []
    for col in WINNER_FLAGS:
        value = record.get(col, 0)
        try:
            flags.append(bool(int(value or 0)))
        except (TypeError, ValueError):
            raise Malformed(f"{col} must be 0 or 1, got {value!r}.") from None
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


def _user_assistant(users: list[str], answers: list[str]) -> list[dict[str, str]]:
    """Alternating user/assistant turns, ending with the last user turn."""
    msgs: list[dict[str, str]] = []
    for i, text in enumerate(users):
        msgs.append({"role": "user", "content": text})
        if i < len(users) - 1:
            msgs.append({"role": "assistant", "content": answers[i]})
    return msgs


def _aligned_turns(prompt_raw: Any, win_raw: Any, lose_raw: Any, win: str, lose: str
                   ) -> tuple[list[dict[str, str]], str, str] | None:
    """(prompt messages, chosen, rejected) when the responses are lists of turns, else None.

    prompt[i] is the user turn answered by response[i]; the winner's earlier answers are the
    history, and the last turns are compared.
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
    return _user_assistant(p_turns, w_turns), w_turns[-1], l_turns[-1]


def to_pair(record: dict, mapping: dict[str, str | None], shape: str, pair_id: str,
            source: str) -> tuple[str | None, Pair]:
    """Build the pair and return (hygiene drop reason or None, pair); Malformed if broken."""
    reason: str | None = None
    if shape == "pairwise":
        won = winner(record, mapping)
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
                                                              prompt_raw)
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


def _messages_prompt(chosen_raw: Any, rejected_raw: Any, prompt_raw: Any
                     ) -> tuple[list[dict[str, str]], str, str, bool]:
    """(prompt, chosen, rejected, prompts agree) for the messages shape."""
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
