"""Setup's "Sampled pairs" source: the model's own answers to prompts become the pairs.

The widgets pick prompt sources (datasets' prompts, a prompt file, the bundled sets) and the
sampling settings, and return an `lls.scoring.SamplingSpec`; Setup scores it like any data.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lls import data as lls_data
from lls.core.errors import LLSError
from lls.scoring import SamplingSpec

SET_LABELS = {"general": "general questions (sampled evaluation)",
              "probe": "favourite-animal questions (the preference probe)",
              "llr": "held-out questions (likelihood-ratio reference)"}


def _known_datasets(shared: Path) -> list[str]:
    """The shared preference files next to the project, offered by default."""
    if not shared.is_dir():
        return []
    return sorted(str(p) for p in shared.iterdir()
                  if p.is_file() and p.name.lower().endswith((".jsonl", ".jsonl.gz", ".csv",
                                                              ".parquet", ".json")))


def sampled_source(shared: Path) -> SamplingSpec | None:
    """The sampled-pairs widgets; the spec they describe, or None (with the reason shown)."""
    st.caption("The model answers each prompt k times (temperature 1); every two answers to a "
               "prompt form a pair, the one the system prompt favours more as chosen. No "
               "human labels are needed, so the number of pairs is limited only by compute.")
    known = _known_datasets(shared)
    picked = st.multiselect("Datasets whose prompts are used (their answers are ignored)",
                            known, default=known[:1], format_func=lambda p: Path(p).name,
                            key="smp_datasets")
    other = st.text_input("Another dataset or a prompt file (one prompt per line in a .txt "
                          "file, or records with a 'prompt' field)", key="smp_other").strip()
    sets = st.multiselect("Bundled prompt sets", list(lls_data.PROMPT_SETS),
                          format_func=SET_LABELS.get, key="smp_sets")
    if sets:
        st.warning("The bundled sets are the questions evaluations read the behavior on: "
                   "training on answers to them measures the effect on training prompts.")
    first = st.checkbox("Also use the first turn of longer conversations (else only "
                        "single-turn prompts)", key="smp_first_turn")
    c1, c2, c3, c4 = st.columns(4)
    k = c1.number_input("Answers per prompt", min_value=2, max_value=16, value=4,
                        key="smp_k", help="Each prompt gives k(k-1)/2 pairs (6 at k = 4).")
    n = c2.number_input("Prompts (0 = all)", min_value=0, value=200, step=50, key="smp_n")
    length = c3.number_input("Answer length (tokens)", min_value=1, value=32, key="smp_len",
                             help="New tokens per answer; scoring reads at most the "
                                  "truncation below (the paper's 32).")
    seed = c4.number_input("Seed", min_value=0, value=0, key="smp_seed")
    sources = [lls_data.PromptSource.dataset(lls_data.DataSpec(p)) for p in picked]
    if other:
        kind = "file" if _is_prompt_file(other) else "dataset"
        sources.append(lls_data.PromptSource(kind, other) if kind == "file" else
                       lls_data.PromptSource.dataset(lls_data.DataSpec(other)))
    sources += [lls_data.PromptSource("set", s) for s in sets]
    if not sources:
        st.info("Pick at least one prompt source.")
        return None
    try:
        spec = SamplingSpec(tuple(sources), k=int(k), n_prompts=int(n) or None,
                            answer_tokens=int(length), seed=int(seed), first_turn=first)
        spec.fingerprint()  # a missing file is reported here, before scoring
    except LLSError as e:
        st.error(str(e))
        return None
    per = int(k) * (int(k) - 1) // 2
    st.caption(f"At most {per} pairs per prompt" + (f", {per * int(n):,} pairs for {int(n)} "
                                                    "prompts" if n else "")
               + ": answers that are empty, repeat another or already show the behavior are "
                 "dropped first (the hygiene check below counts the prompts).")
    return spec


def _is_prompt_file(path: str) -> bool:
    """A .txt file, or records with a 'prompt' field and no response fields."""
    name = path.lower().removesuffix(".gz")
    if name.endswith(".txt"):
        return True
    try:
        first = lls_data.preview(lls_data.DataSpec(path), n=1)
        return not first
    except LLSError:
        return True  # not readable as preference data: read it as prompts
