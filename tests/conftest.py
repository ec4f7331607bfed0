"""Shared fixtures: the real test data in ../shared/data and the bundled model.

The whole suite runs offline against a session cache directory (LLS_CACHE), so tests never
touch the developer's ./cache. The bundled GGUF model is de-quantised into it once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HH = SHARED / "hh_rlhf_harmless_base_test.jsonl.gz"
ORCA = SHARED / "orca_dpo_pairs_sample.csv"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """A cache directory for the whole session (models, scores, jobs)."""
    path = Path(os.environ.get("LLS_TEST_CACHE") or tmp_path_factory.mktemp("lls-cache"))
    os.environ["LLS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def bundled(session_cache):
    """(model, tokenizer): the bundled SmolLM2-135M-Instruct, float32 on CPU, loaded once."""
    from lls.models.load import load_model

    return load_model()


@pytest.fixture(scope="session")
def hh_pairs(bundled):
    """The first 24 clean hh-rlhf pairs with prompts of at most 192 tokens."""
    from lls.data.source import DataSpec, iter_pairs

    _, tok = bundled
    return list(iter_pairs(DataSpec(str(HH), limit=24), tokenizer=tok, max_prompt_tokens=192))


@pytest.fixture(scope="session")
def small_run(bundled):
    """A finished scoring run: 24 hh-rlhf pairs, owl, truncation 32, chunks of 8."""
    from lls.core import behaviors
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, score

    model, tok = bundled
    cfg = ScoreConfig(DataSpec(str(HH), limit=24), behaviors.animal("owl"),
                      max_prompt_tokens=192, chunk_size=8)
    return score(cfg, model=model, tokenizer=tok)


@pytest.fixture(scope="session")
def owl_control_runs(bundled):
    """(config, target run, control run): 12 hh-rlhf pairs, prompts <= 192 tokens, chunks of
    4, scored with the owl prompt and with the default neutral control (what Setup builds)."""
    from lls.core import behaviors
    from lls.scoring.contrastive import score_control
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, score

    model, tok = bundled
    cfg = ScoreConfig(DataSpec(str(HH), limit=12), behaviors.animal("owl"),
                      max_prompt_tokens=192, chunk_size=4)
    target = score(cfg, model=model, tokenizer=tok)
    control = score_control(cfg, model=model, tokenizer=tok)
    return cfg, target, control
