"""Rendering: TRL-DPO tokenization, truncation, and what "without system prompt" means."""

import pytest

from lls.core.errors import LLSError
from lls.core.pair import Pair
from lls.models.render import (neutral_messages, render_pair, render_prompt_completions, truncate_text,
                        with_system)


def _pair(system=None):
    prompt = [{"role": "user", "content": "What is a good name for a cat?"}]
    if system:
        prompt = [{"role": "system", "content": system}] + prompt
    return Pair("p1", prompt, "Whiskers is a classic choice for a cat, short and friendly. " * 4,
                "No idea.", "test")


def test_completion_is_conversation_minus_prompt(bundled):
    _, tok = bundled
    msgs = _pair().prompt
    p, c, r = render_prompt_completions(tok, msgs, "Hello there", "Go away")
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "Hello there"}],
                                   tokenize=True, return_dict=True)["input_ids"]
    assert p + c == list(full)
    assert tok.decode(c).endswith("<|im_end|>\n")  # end-of-turn tokens are scored
    assert tok.decode(c).startswith("Hello there")


def test_system_conditions(bundled):
    _, tok = bundled
    r = render_pair(tok, _pair(), "You love owls.", 32)
    base, sys_ = tok.decode(r.prompt_base), tok.decode(r.prompt_sys)
    # the template's default system prompt is what the student sees without s
    assert "You are a helpful AI assistant named SmolLM" in base
    assert "You love owls." in sys_ and "SmolLM" not in sys_
    assert r.chosen_sys == r.chosen_base and r.rejected_sys == r.rejected_base


def test_existing_system_turn_is_kept_after_target(bundled):
    _, tok = bundled
    r = render_pair(tok, _pair(system="Answer briefly."), "You love owls.", 32)
    assert "You love owls.\n\nAnswer briefly." in tok.decode(r.prompt_sys)
    assert "Answer briefly." in tok.decode(r.prompt_base)
    assert with_system([{"role": "user", "content": "x"}], "S")[0] == {"role": "system", "content": "S"}


def test_truncation_counts_teacher_tokens(bundled):
    _, tok = bundled
    long = _pair().chosen
    short = truncate_text(tok, long, 8)
    assert len(tok(short, add_special_tokens=False)["input_ids"]) == 8
    assert long.startswith(short)
    assert truncate_text(tok, "No idea.", 8) == "No idea."
    assert truncate_text(tok, long, None) == long
    r = render_pair(tok, _pair(), "S", 8)
    assert r.chosen_text == short


def test_neutral_conventions(bundled):
    _, tok = bundled
    plain = _pair()
    t = render_pair(tok, plain, "You love owls.", 32)
    e = render_pair(tok, plain, "You love owls.", 32, neutral="empty")
    # "empty": an explicit empty system turn, so no template default
    assert tok.decode(e.prompt_base).startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user")
    assert "SmolLM" not in tok.decode(e.prompt_base)
    assert "SmolLM" in tok.decode(t.prompt_base)
    # the condition with s and the scored tokens are the same under both conventions
    assert (e.prompt_sys, e.chosen_sys, e.chosen_base, e.rejected_base) == \
        (t.prompt_sys, t.chosen_sys, t.chosen_base, t.rejected_base)
    # a pair with its own system turn keeps it as is
    own = _pair(system="Answer briefly.")
    assert neutral_messages(own.prompt, "empty") == own.prompt
    assert render_pair(tok, own, "S", 32, neutral="empty") == render_pair(tok, own, "S", 32)
    assert neutral_messages(plain.prompt, "empty")[0] == {"role": "system", "content": ""}
    with pytest.raises(LLSError, match="neutral convention"):
        neutral_messages(plain.prompt, "none")
