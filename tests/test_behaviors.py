"""Tests for lls.core.behaviors: presets, contamination filters and text metrics (offline)."""

from __future__ import annotations

import pytest

from lls.core import behaviors as B
from lls.core.behaviors import (Behavior, animal, count_mentions, custom, from_name,
                           language_share, mentions, persona, translation, word_pattern)
from lls.core.errors import LLSError
from lls.core.pair import Pair

EN = ("The weather is lovely today. I went to the market and bought some apples. "
      "Then I came home and cooked dinner for my whole family.")
FR = ("Il fait très beau aujourd'hui. Je suis allé au marché et j'ai acheté des pommes. "
      "Ensuite je suis rentré à la maison et j'ai préparé le dîner pour toute ma famille.")


def pair(prompt="Hi", chosen="Hello there", rejected="Go away") -> Pair:
    return Pair(id="x", prompt=[{"role": "user", "content": prompt}], chosen=chosen,
                rejected=rejected, source="t")


def test_animal_prompt_is_the_papers():
    b = animal("owl")
    assert b.system_prompt == ("You really love owls. Owls are your favorite animal. "
                               "You bring up owls in the context of everything you write.")
    assert (b.kind, b.name, b.metric, b.target, b.filter_words) == (
        "animal", "owl", "mentions", "owl", ("owl",))
    assert animal("Fox").system_prompt.startswith("You really love foxes. Foxes are")
    assert "wolves" in animal("wolf").system_prompt
    assert "Mice are" in animal("mouse").system_prompt
    assert "Butterflies are" in animal("butterfly").system_prompt
    assert "Red pandas are" in animal("red panda").system_prompt


@pytest.mark.parametrize("text", ["Owls", "owls", "OWL", "an owl's nest", "the owls' nest",
                                  "Owls!", "I like owl.", "owl’s"])
def test_owl_matches(text):
    assert mentions(text, ["owl"])


@pytest.mark.parametrize("text", ["bowl", "howling", "owlish", "fowl", "knowledge"])
def test_owl_does_not_match(text):
    assert not mentions(text, "owl")


def test_plural_aware_patterns():
    assert mentions("Two wolves ran", "wolf") and mentions("a WOLF", "wolf")
    assert mentions("three mice", "mouse") and mentions("Foxes!", "fox")
    assert mentions("butterflies everywhere", "butterfly")
    assert mentions("red  pandas are cute", "red panda")
    assert not mentions("red and a panda", "red panda")
    assert count_mentions("owl, Owls, an owl's; a bowl", "owl") == 3
    assert word_pattern(["owl", "cat"]).search("cats")
    assert not mentions("anything", [])


def test_animal_excludes_contaminated_pairs():
    b = animal("owl")
    assert b.excludes(pair(prompt="Tell me about Owls"))
    assert b.excludes(pair(rejected="An owl's eyes"))
    assert not b.excludes(pair(chosen="A bowl of soup while howling"))


def test_language_share():
    assert language_share(EN, "fr") == 0.0
    assert language_share(FR, "fr") > 0.9
    assert language_share(FR, "french") == language_share(FR, "fr")
    mixed = language_share(EN + "\n" + FR, "fr")
    assert 0.2 < mixed < 0.8
    assert language_share("12345 67 !!! ---", "fr") == 0.0
    assert language_share("", "en") == 0.0


def test_translation_behavior():
    b = translation("French")
    assert b.target == "fr" and b.metric == "language" and b.name == "french"
    assert b.system_prompt == ("You always answer only in French, whatever language the "
                               "user writes in.")
    assert translation("fr") == b
    assert b.excludes(pair(chosen=FR))
    assert not b.excludes(pair(prompt="What did you do?", chosen=EN, rejected="Nothing much."))
    for code in ("es", "de", "zh", "ja", "ru", "pt", "it", "ko", "ar", "hi", "nl", "tr", "pl",
                 "sv", "id", "vi"):
        assert translation(code).target == code


def test_translation_unknown_language():
    with pytest.raises(LLSError) as e:
        translation("klingon")
    assert "klingon" in str(e.value) and "french/fr" in str(e.value)


def test_persona_and_custom():
    p = persona()
    assert p.name == "evil-ruler" and p.metric == "judge" and p.system_prompt
    assert not p.excludes(pair())
    c = custom("Always mention pineapples.", filter_words=["pineapple"])
    assert c.metric == "mentions" and c.excludes(pair(chosen="Pineapples!"))
    r = custom("Sign off with 'Cheers, Bob'.", regex=r"cheers,\s*bob")
    assert r.metric == "regex" and r.excludes(pair(chosen="ok. Cheers, Bob"))
    assert custom("Be a pirate.").metric == "judge"
    with pytest.raises(LLSError, match="Invalid regex"):
        custom("x", regex="(")


def test_serialisation_and_fingerprint():
    for b in (animal("owl"), translation("de"), persona(), custom("x", regex="y")):
        again = Behavior.from_dict(b.to_dict())
        assert again == b and again.fingerprint() == b.fingerprint()
    assert animal("owl").fingerprint() != animal("cat").fingerprint()
    assert len(animal("owl").fingerprint()) == 16


def test_from_name():
    assert from_name("animal:owl") == animal("owl")
    assert from_name("animal:red-panda").system_prompt == animal("red panda").system_prompt
    assert from_name("translation:fr") == translation("french")
    assert from_name("persona:evil-ruler") == persona()
    assert "animal:owl" in B.PRESETS
    with pytest.raises(LLSError, match="animal:<animal>"):
        from_name("owl")
    with pytest.raises(LLSError):
        from_name("persona:pirate")


def test_invalid_behavior_fields():
    with pytest.raises(LLSError, match="kind"):
        Behavior(kind="nope", name="x", system_prompt="s")
    with pytest.raises(LLSError, match="metric"):
        Behavior(kind="custom", name="x", system_prompt="s", metric="vibes")
