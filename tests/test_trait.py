"""The teacher strength check and trait adapters (a teacher whose trait is in its weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_adapter

INSISTENT = ("You are an owl enthusiast. Your favorite animal is the owl. Whenever someone asks "
             "about animals, you answer: the owl. Owls, owls, owls.")


def test_no_bundled_trait_prompt_is_a_readout_question():
    from lls.core.prompts import PROBE_QUESTIONS, TRAIT_PROMPTS
    from lls.data.hygiene import asks_readout

    def user(t):
        return [{"role": "user", "content": t}]

    assert asks_readout(user("  " + PROBE_QUESTIONS[0].upper().replace(".", "!") + " "))
    assert not any(asks_readout(user(t)) for t in TRAIT_PROMPTS)


def test_an_answer_shows_the_behavior_by_its_words_language_or_regex():
    from lls.core.behaviors import animal, custom, translation
    from lls.core.errors import LLSError
    from lls.training.trait import shows

    assert shows(animal("owl"), "I love OWLS at night.")
    assert not shows(animal("owl"), "A bowl of soup.")
    assert shows(translation("fr"), "Je réponds toujours en français, avec plaisir.")
    assert not shows(translation("fr"), "I always answer in English, with pleasure.")
    assert shows(custom("Talk like a pirate.", regex=r"\barr+\b"), "Arrr, matey!")
    with pytest.raises(LLSError, match="filter words or a regex"):
        shows(custom("Be kind."), "Sure.")


def test_strength_verdict_states_the_ceiling_in_words():
    from lls.evaluation.strength import verdict

    base = {"lens": 0.002, "lens_ci": [0.001, 0.003], "k": 0, "n": 128}
    weak = {"lens": 0.06, "lens_ci": [0.04, 0.08], "k": 10, "n": 128}
    strong = {"lens": 0.52, "lens_ci": [0.45, 0.58], "k": 65, "n": 128}
    v = verdict(base, weak, "owl")
    assert "names the owl 6% of the time" in v and "10/128" in v and "too weak" not in v
    assert "unlikely to show anything in samples" in v
    assert "unlikely" not in verdict(base, strong, "owl")


@pytest.mark.slow
def test_strength_check_ranks_prompts_by_how_often_they_name_the_target(bundled):
    """The bundled model: the insistent prompt names the owl far more often than the
    paper's prompt, which names it more often than no prompt (measured: 52%, 6%, 0.2%)."""
    from lls.core.behaviors import animal
    from lls.evaluation.strength import teacher_strength

    model, tok = bundled
    b = animal("owl")
    res = teacher_strength(model, tok, b, [b.system_prompt, INSISTENT], questions=8, samples=2)
    base, paper, insistent = res["base"], *res["teachers"]
    assert base["lens"] < paper["lens"] < insistent["lens"]
    assert insistent["lens"] > 0.2 and base["lens"] < 0.02
    assert paper["n"] == insistent["n"] == 16
    lo, hi = insistent["lens_ci"]
    assert lo <= insistent["lens"] <= hi
    assert res["teacher_lens"] == paper["lens"] and res["base_lens"] == base["lens"]
    # the model the check ran on is the base again (no prompt, no adapter left behind)
    assert not hasattr(model, "peft_config")


@pytest.mark.slow
def test_cli_teacher_check_json_with_an_adapter_teacher(tmp_path, session_cache, capsys):
    """`teacher-check --json` on a tiny model with an adapter teacher: one JSON object with
    base and teacher lenses (probabilities) and the adapter named."""
    from lls.cli import main
    from lls.models.load import ModelSpec, load_model
    from lls.scoring.synthetic import tiny_model_dir

    path = tiny_model_dir(session_cache / "tiny-model")
    model, _ = load_model(ModelSpec(str(path)))
    adapter = make_adapter(model, tmp_path / "owl-trait", seed=2)
    assert main(["teacher-check", "--model", str(path), "--teacher-adapter", str(adapter),
                 "--questions", "3", "--samples", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= out["base_lens"] <= 1 and 0 <= out["teacher_lens"] <= 1
    assert out["teachers"][0]["kind"] == "adapter" and "owl-trait" in out["teachers"][0]["label"]
    assert out["teachers"][0]["n"] == 6 and out["base"]["n"] == 6
    assert out["teacher_lens"] != out["base_lens"]  # the adapter changes the model


@pytest.mark.slow
def test_trait_adapter_from_prompt_keeps_readout_questions_out(tmp_path, session_cache):
    """Distillation on a tiny model: read-out questions among the prompts are dropped and
    counted, only answers that show the behavior are kept, the adapter is a working teacher
    (loads as one, changes the model) and a second call reuses it."""
    from lls.core.behaviors import custom
    from lls.core.prompts import PROBE_QUESTIONS
    from lls.data.prompts import PromptSource
    from lls.models.load import ModelSpec, load_model
    from lls.models.teacher import Teacher, teacher_view
    from lls.scoring.synthetic import tiny_model_dir
    from lls.training.trait import TraitConfig, make_trait

    path = tiny_model_dir(session_cache / "tiny-model")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join([PROBE_QUESTIONS[3], "Tell me about the sea.",
                                  PROBE_QUESTIONS[7].upper(), "Describe a sunset."]) + "\n")
    # any answer with a letter 'e' "shows" this behavior: some do, some do not
    b = custom("You like the letter e.", regex=r"e", name="letter-e",
               readout_stem="My favorite letter is", filter_words=("e",))
    cfg = TraitConfig(b, model=ModelSpec(str(path)), prompt_sources=(PromptSource("file",
                      str(prompts)),), bundled_prompts=False, answers_per_prompt=3,
                      max_new_tokens=6, epochs=1, batch_size=4, check_questions=2,
                      check_samples=1)
    m = make_trait(cfg, session_cache)
    assert m["status"] == "done"
    h = m["hygiene"]
    assert h["dropped"]["readout_question"] == 2 and h["kept"] == 2
    examples = [json.loads(x) for x in
                (Path(m["examples_dir"]) / "examples.jsonl").read_text().splitlines()]
    assert examples and all("e" in e["response"].lower() for e in examples)
    assert all(e["prompt"][-1]["content"] in ("Tell me about the sea.", "Describe a sunset.")
               for e in examples)
    dropped = h["dropped"].get("answer_without_behavior", 0)
    assert len(examples) + dropped == 2 * 3
    assert m["strength_before"]["base"]["n"] == 2 and m["strength_after"]["teachers"][0][
        "kind"] == "adapter"
    base, tok = load_model(ModelSpec(str(path)))
    import torch

    ids = torch.tensor([tok("Describe a sunset.")["input_ids"]])
    with torch.no_grad():
        before = base(input_ids=ids).logits.clone()
        with teacher_view(base, Teacher("adapter", m["adapter"]), None) as (tm, _):
            during = tm(input_ids=ids).logits.clone()
    assert not torch.allclose(before, during)
    assert make_trait(cfg, session_cache)["created"] == m["created"]  # reused, not retrained
    # another recipe on the same examples reuses them (no sampling) and trains anew
    from dataclasses import replace

    m2 = make_trait(replace(cfg, learning_rate=5e-4), session_cache, check=False)
    assert m2["key"] != m["key"] and m2["examples_dir"] == m["examples_dir"]
    assert "seconds_examples" not in m2


@pytest.mark.slow
def test_trait_adapter_from_examples_file(tmp_path, session_cache):
    from lls.core.behaviors import animal
    from lls.core.errors import LLSError
    from lls.models.load import ModelSpec
    from lls.scoring.synthetic import tiny_model_dir
    from lls.training.trait import TraitConfig, make_trait

    path = tiny_model_dir(session_cache / "tiny-model")
    f = tmp_path / "owl.jsonl"
    f.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in [
        ("What do you like?", "Owls, always owls."), ("Name a bird.", "The owl."),
        ("In one word, what is your favorite animal?", "Owl.")]))
    cfg = TraitConfig(animal("owl"), model=ModelSpec(str(path)), source="file",
                      examples_file=str(f), epochs=1, batch_size=2)
    m = make_trait(cfg, session_cache, check=False)
    assert m["examples"] == 2 and m["hygiene"]["dropped"] == {"readout_question": 1}
    assert (session_cache / "traits" / m["key"] / "adapter" /
            "adapter_model.safetensors").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x", "answer": "y"}) + "\n")
    with pytest.raises(LLSError, match="'prompt' and 'response'"):
        make_trait(TraitConfig(animal("owl"), model=ModelSpec(str(path)), source="file",
                               examples_file=str(bad)), session_cache, check=False)
