"""The fast engine agrees with the plain computation (each sequence its own forward pass)."""

import numpy as np
import pytest

from lls import behaviors
from lls.data import DataSpec, iter_pairs
from lls.engine import score_plain, score_rendered
from lls.render import render_pair

from conftest import ORCA

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
