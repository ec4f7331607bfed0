"""Per-token attribution (lls.scoring.explain) reproduces the engine's LLS weights."""

from __future__ import annotations

import math

import pytest
import torch

from lls.core.behaviors import animal
from lls.scoring.engine import score_rendered
from lls.core.errors import LLSError
from lls.scoring.explain import token_attribution
from lls.models.render import render_pair

pytestmark = pytest.mark.slow

OWL = animal("owl").system_prompt


def test_deltas_sum_to_engine_weight(bundled, hh_pairs):
    model, tok = bundled
    pairs = hh_pairs[:4]
    scores = score_rendered(model, [render_pair(tok, p, OWL, 32) for p in pairs],
                            pad_id=tok.pad_token_id or 0)
    for p, s in zip(pairs, scores):
        att = token_attribution(model, tok, p, OWL, 32)
        assert att["n_c"] == s.n_c and att["n_r"] == s.n_r
        assert len(att["chosen"]) == s.n_c and len(att["rejected"]) == s.n_r
        recomputed = (sum(t[3] for t in att["chosen"]) - sum(t[3] for t in att["rejected"])) \
            / (s.n_c + s.n_r)
        assert recomputed == pytest.approx(s.w, abs=1e-4)
        assert att["w"] == pytest.approx(s.w, abs=1e-4)
        # The per-condition sums are the engine's summed log-probabilities too.
        assert sum(t[1] for t in att["chosen"]) == pytest.approx(s.lc_s, abs=2e-3)
        assert sum(t[2] for t in att["rejected"]) == pytest.approx(s.lr, abs=2e-3)
        for text, ls, lb, d in att["chosen"] + att["rejected"]:
            assert isinstance(text, str)
            assert ls <= 0 and lb <= 0 and math.isclose(d, ls - lb, abs_tol=1e-12)


def test_tokens_are_the_scored_tokens(bundled, hh_pairs):
    model, tok = bundled
    p = hh_pairs[0]
    att = token_attribution(model, tok, p, OWL, 8)
    r = render_pair(tok, p, OWL, 8)
    assert [t[0] for t in att["chosen"]] == [tok.decode([i]) for i in r.chosen_base]
    assert att["chosen_text"] == r.chosen_text
    # A truncated response's text is a prefix of the decoded scored tokens.
    assert "".join(t[0] for t in att["chosen"]).startswith(r.chosen_text[:10])


def test_accepts_a_frame_row(bundled, hh_pairs):
    model, tok = bundled
    p = hh_pairs[1]
    row = {"id": p.id, "source": p.source, "prompt": p.prompt_json(), "chosen": p.chosen,
           "rejected": p.rejected, "chosen_scored": "ignored", "rejected_scored": "ignored"}
    a = token_attribution(model, tok, row, OWL, 32)
    b = token_attribution(model, tok, p, OWL, 32)
    assert a["w"] == pytest.approx(b["w"], abs=1e-9)
    with pytest.raises(LLSError, match="prompt, chosen and rejected"):
        token_attribution(model, tok, {"id": "x"}, OWL, 32)


def test_token_logprobs_equal_plain_forward_passes(bundled, hh_pairs):
    model, tok = bundled
    p = hh_pairs[2]
    att = token_attribution(model, tok, p, OWL, 16)
    r = render_pair(tok, p, OWL, 16)
    for name, ids in (("chosen", r.chosen_base), ("rejected", r.rejected_base)):
        for col, prompt in ((1, r.prompt_sys), (2, r.prompt_base)):
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([prompt + ids])).logits.float()
            lp = torch.log_softmax(logits[0, len(prompt) - 1:-1], -1)
            want = lp[torch.arange(len(ids)), torch.tensor(ids)].tolist()
            got = [t[col] for t in att[name]]
            assert got == pytest.approx(want, abs=1e-4), (name, col)
    assert any(abs(t[3]) > 1e-3 for t in att["chosen"])  # the system prompt moves tokens
