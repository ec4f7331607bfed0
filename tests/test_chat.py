"""lls.evaluation.chat on the bundled model: streaming in all slots, seeds, adapters without reloading
the base weights, multi-turn, export."""

from __future__ import annotations

import copy
import json
import time

import pytest

from lls.evaluation.chat import (ChatModels, Conversation, Sampling, adapter_slot, base_slot, run_turn,
                      system_slot)
from lls.scoring.engine import score_replies
from lls.core.errors import ModelError
from lls.models.generation import prompt_ids, stop_ids, stream_tokens
from lls.models.render import with_system

from conftest import make_adapter

pytestmark = pytest.mark.slow

OWL_PROMPT = "You really love owls. Owls are your favorite animal."
HELLO = [{"role": "user", "content": "Name one animal."}]


@pytest.fixture(scope="module")
def chat(bundled, tmp_path_factory):
    model, tok = bundled
    # a private copy: attaching adapters injects LoRA layers into the model it wraps
    models = ChatModels(model=copy.deepcopy(model), tokenizer=tok)
    root = tmp_path_factory.mktemp("adapters")
    return models, make_adapter(model, root / "a1", 0), make_adapter(model, root / "a2", 1)


def greedy(n=8):
    return Sampling(temperature=0.0, max_new_tokens=n, seed=0)


def test_stream_fills_all_slots_token_by_token(chat):
    models, a1, _ = chat
    slots = [base_slot(), system_slot(OWL_PROMPT), adapter_slot(a1)]
    events = list(models.stream_all(slots, HELLO, Sampling(max_new_tokens=6, seed=3)))
    texts = ["".join(p for i, p in events if i == k) for k in range(3)]
    assert all(t.strip() for t in texts), texts
    # interleaved: the first three pieces come from three different slots
    assert sorted(i for i, _ in events[:3]) == [0, 1, 2]
    assert models.last_first_token_s is not None
    print(f"\nfirst-token latency (3 columns): {models.last_first_token_s:.3f} s")


def test_fixed_seed_reproduces_and_seed_changes(chat):
    models, a1, _ = chat
    s = Sampling(temperature=1.0, max_new_tokens=8, seed=7)
    slots = [base_slot(), adapter_slot(a1)]
    one = [models.reply(x, HELLO, s) for x in slots]
    two = [models.reply(x, HELLO, s) for x in slots]
    assert one == two
    other = [models.reply(x, HELLO, Sampling(1.0, 1.0, 8, seed=8)) for x in slots]
    assert other != one


def test_adapter_changes_output_and_base_is_untouched(chat, bundled):
    models, a1, a2 = chat
    model, tok = bundled
    ids = prompt_ids(tok, HELLO)
    plain = tok.decode(list(stream_tokens(model, ids, temperature=0, max_new_tokens=8,
                                          stop=stop_ids(model, tok))), skip_special_tokens=True)
    base_before = models.reply(base_slot(), HELLO, greedy())
    r1 = models.reply(adapter_slot(a1), HELLO, greedy())
    r2 = models.reply(adapter_slot(a2), HELLO, greedy())
    base_after = models.reply(base_slot(), HELLO, greedy())
    assert base_before == base_after == plain.strip()
    assert r1 != plain.strip() and r2 != r1
    # switching back to an adapter that is already attached reuses it (no reload)
    n_attached = len(models.host.names)
    t = time.perf_counter()
    assert models.reply(adapter_slot(a1), HELLO, greedy()) == r1
    assert len(models.host.names) == n_attached == 2
    print(f"\nswitch + 8 greedy tokens: {time.perf_counter() - t:.2f} s")


def test_system_prompt_slot_uses_the_prompt(chat, bundled):
    models, _, _ = chat
    model, tok = bundled
    owl = models.reply(system_slot(OWL_PROMPT), HELLO, greedy(10))
    # the slot's reply is greedy decoding of the prompt rendered WITH the system turn ...
    ids = prompt_ids(tok, HELLO, OWL_PROMPT)
    assert ids != prompt_ids(tok, HELLO)
    want = tok.decode(list(stream_tokens(model, ids, temperature=0, max_new_tokens=10,
                                         stop=stop_ids(model, tok))), skip_special_tokens=True)
    assert owl == want.strip()
    assert owl != models.reply(base_slot(), HELLO, greedy(10))
    # ... and that system turn makes an owl answer more likely than without it
    (with_s,), (without,) = score_replies(model, tok, [(with_system(HELLO, OWL_PROMPT), ["Owl"]),
                                                       (HELLO, ["Owl"])])[0]
    assert with_s > without + 1.0


def test_multi_turn_and_export(chat):
    models, a1, _ = chat
    slots = [base_slot(), system_slot(OWL_PROMPT), adapter_slot(a1)]
    conv = Conversation(slots)
    seen = []
    r1 = run_turn(models, conv, "Hi! Name a bird.", Sampling(max_new_tokens=5, seed=1),
                  on_piece=lambda i, t: seen.append(i))
    assert set(seen) == {0, 1, 2}
    run_turn(models, conv, "Why that one?", Sampling(max_new_tokens=5, seed=1))
    assert conv.turns == 2
    msgs = conv.messages_for(slots[1], "And a third?")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == r1[slots[1].key].strip()
    data = json.loads(conv.to_json())
    assert len(data["turns"]) == 2 and len(data["columns"]) == 3
    assert data["turns"][0]["sampling"]["seed"] == 1
    md = conv.to_markdown()
    assert "## Turn 2" in md and "Why that one?" in md and slots[2].label in md
    # the second turn depends on the first: same seed, other history -> other prompt ids
    conv.clear()
    assert conv.turns == 0 and json.loads(conv.to_json())["turns"] == []


def test_bad_adapter_path_is_a_clear_error(chat, tmp_path):
    models, _, _ = chat
    with pytest.raises(ModelError, match="does not exist"):
        models.prepare(adapter_slot(tmp_path / "nope"))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "adapter_config.json").write_text("{}")
    (tmp_path / "x" / "adapter_model.bin").write_text("")
    with pytest.raises(ModelError, match="safetensors"):
        models.prepare(adapter_slot(tmp_path / "x"))


def test_attaching_an_adapter_warns_nothing(bundled, tmp_path):
    """peft reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model:
    the chat (and every read-out that attaches adapters) keeps that FutureWarning out of the
    user's terminal and the dashboard's log."""
    import warnings

    model, tok = bundled
    models = ChatModels(model=copy.deepcopy(model), tokenizer=tok)
    adapter = make_adapter(model, tmp_path / "a", 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        models.prepare(adapter_slot(adapter))
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


def test_replies_and_rows_render_as_text_never_as_markdown_images():
    from ui.chat import reply_markdown
    from ui.common import as_text

    row = "![x](http://127.0.0.1:9/x.png) <img src=x> **bold**\nnext"
    shown = as_text(row)
    import re

    assert re.search(r"(?<!\\)[!\[\]()<>*]", shown) is None  # every one escaped
    assert shown.replace("\\", "").replace("  \n", "\n") == row  # the same characters
    assert reply_markdown(row).startswith("\\!\\[x\\]")
    assert reply_markdown("My favorite animal is the ![", "My favorite animal is the ") == \
        "**My favorite animal is the **\\!\\["
