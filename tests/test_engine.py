"""The fast engine (pairs and many completions per prompt) agrees with the plain computation
(each sequence its own forward pass)."""

import numpy as np
import pytest
import torch

from lls.core import behaviors
from lls.data.source import DataSpec, iter_pairs
from lls.scoring.engine import score_completions, score_plain, score_rendered
from lls.core.errors import LLSError
from lls.models.render import render_pair, render_prompt_completions

from conftest import ORCA

pytestmark = pytest.mark.slow  # every test runs the bundled model

OWL = behaviors.animal("owl").system_prompt


def _arr(scores):
    return np.array([[s.lc_s, s.lr_s, s.lc, s.lr] for s in scores]), np.array([s.w for s in scores])


@pytest.fixture(scope="module")
def rendered(bundled, hh_pairs):
    _, tok = bundled
    orca = list(iter_pairs(DataSpec(str(ORCA), limit=3), tokenizer=tok, max_prompt_tokens=192))
    return [render_pair(tok, p, OWL, 32) for p in hh_pairs[:8] + orca[:2]]


def test_engine_matches_plain_forward_passes(bundled, rendered):
    model, tok = bundled
    ref_lp, ref_w = _arr(score_plain(model, rendered, batch_size=1, pad_id=tok.pad_token_id))
    for kw in ({"batch_tokens": 300}, {"share_prefix": False}):
        lp, w = _arr(score_rendered(model, rendered, pad_id=tok.pad_token_id, **kw))
        assert np.abs(lp - ref_lp).max() < 1e-3, kw
        assert np.abs(w - ref_w).max() < 1e-4, kw
    # the weights are not all the same: the test would catch a constant engine
    assert ref_w.std() > 1e-3
    assert (ref_lp < 0).all()


def test_padded_plain_batches_match_too(bundled, rendered):
    model, tok = bundled
    a = _arr(score_plain(model, rendered[:6], batch_size=8, pad_id=tok.pad_token_id))[1]
    b = _arr(score_plain(model, rendered[:6], batch_size=1, pad_id=tok.pad_token_id))[1]
    assert np.abs(a - b).max() < 1e-4


def test_weight_formula(bundled, rendered):
    model, tok = bundled
    s = score_rendered(model, rendered[:2], pad_id=tok.pad_token_id)[0]
    assert s.w == pytest.approx(((s.lc_s - s.lr_s) - (s.lc - s.lr)) / (s.n_c + s.n_r))
    assert s.n_c == len(rendered[0].chosen_base) and s.n_r == len(rendered[0].rejected_base)


def _plain_token_logprobs(model, prompt, completion) -> list[float]:
    """Reference: one full forward pass of prompt + completion, log P of each completion token."""
    with torch.inference_mode():
        ids = torch.tensor([prompt + completion])
        lp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
    return [float(lp[0, len(prompt) - 1 + i, t]) for i, t in enumerate(completion)]


def test_score_completions_matches_plain_forward(bundled):
    model, tok = bundled
    m1 = [{"role": "user", "content": "Quick: favourite animal? One word."}]
    m2 = [{"role": "user", "content": "Tell me a short joke about cats."}]
    p1, a, b = render_prompt_completions(tok, m1, "Owl", "dolphins")
    p2, c, d = render_prompt_completions(tok, m2, "Why did the cat sit on the laptop? To "
                                                  "keep an eye on the mouse.", "No.")
    comps = [[a, b], [c, d, [], d[:1]]]
    want = [[_plain_token_logprobs(model, p, x) for x in cs] for p, cs in zip([p1, p2], comps)]
    # small budgets force several rows per prompt and several batches
    for kw in ({}, {"max_unit_tokens": 6, "batch_tokens": 40}):
        sums = score_completions(model, [p1, p2], comps, **kw)
        np.testing.assert_allclose(np.concatenate(sums),
                                   [sum(x) for w in want for x in w], atol=1e-3)
        toks = score_completions(model, [p1, p2], comps, per_token=True, **kw)
        assert [[len(x) for x in r] for r in toks] == [[len(x) for x in r] for r in comps]
        np.testing.assert_allclose(np.concatenate([x for r in toks for x in r]),
                                   np.concatenate([x for w in want for x in w]), atol=1e-4)
    assert sums[1][2] == 0.0 and toks[1][2] == []  # an empty completion
    assert len({round(v, 3) for r in sums for v in r}) == 6  # distinct values: not a constant


def test_score_completions_rejects_bad_input(bundled):
    model, _ = bundled
    with pytest.raises(LLSError, match="one list of completions per prompt"):
        score_completions(model, [[1, 2]], [])
    with pytest.raises(LLSError, match="no tokens"):
        score_completions(model, [[]], [[[5]]])
