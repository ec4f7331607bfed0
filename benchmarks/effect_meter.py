"""Effect meter vs sampled evaluation: time to read out one model (bundled base model).

Read-out: `lls.evaluation.meter.readout` with the defaults (32 one-word questions x 10 candidates x up
to 4 surface forms; likelihood ratio over 64 + 64 cached reference responses of <= 48
tokens). The one-off sampling of the reference set is timed separately: it is paid once per
behavior, not per model or checkpoint.

Sampled evaluation (paper protocol): 10 general prompts x 100 samples x 96 new tokens at
temperature 1 with `lls.models.generation.sample`. That is ~1000 generations, too long for this
machine, so a fraction (default 2 prompts x 20 samples) is timed and extrapolated linearly
to the full protocol (sampling cost grows linearly with prompts x samples).

    PYTHONPATH=. .venv/bin/python benchmarks/effect_meter.py [--prompts 2 --samples 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("LLS_CACHE", tempfile.mkdtemp(prefix="lls-bench-meter-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--samples", type=int, default=20)
    a = ap.parse_args()

    from lls.core import behaviors
    from lls.evaluation import meter
    from lls.core.prompts import GENERAL_PROMPTS
    from lls.models.generation import sample
    from lls.models.load import load_model

    model, tok = load_model()
    owl = behaviors.animal("owl")

    say = lambda *x: print(*x, flush=True)  # noqa: E731 - progressive output on a slow box
    t = time.perf_counter()
    ref = meter.build_reference(model, tok, owl)
    t_ref = time.perf_counter() - t
    say(f"reference set (once per behavior, {len(ref.behavior)}+{len(ref.neutral)} "
        f"responses sampled): {t_ref:.1f} s")
    t = time.perf_counter()
    r = meter.readout(model, tok, owl, reference=ref)
    t_read = time.perf_counter() - t
    p = r["probe"]
    say(f"read-out of one model (probe {p['n_questions']} questions x "
        f"{len(p['candidates'])} candidates + likelihood ratio over "
        f"{len(ref.behavior)}+{len(ref.neutral)} responses): {t_read:.1f} s")

    full_prompts, full_samples, new_tokens = len(GENERAL_PROMPTS), 100, 96
    t = time.perf_counter()
    sample(model, tok, GENERAL_PROMPTS[:a.prompts], n=a.samples, temperature=1.0,
           max_new_tokens=new_tokens, seed=0)
    t_frac = time.perf_counter() - t
    scale = (full_prompts * full_samples) / (a.prompts * a.samples)
    t_eval = t_frac * scale
    say(f"sampled evaluation, measured on {a.prompts} prompts x {a.samples} samples x "
        f"{new_tokens} tokens: {t_frac:.1f} s; extrapolated linearly (x{scale:.0f}) to the "
        f"paper protocol {full_prompts} x {full_samples} x {new_tokens}: {t_eval:.0f} s")
    say(f"ratio sampled evaluation / read-out: {t_eval / t_read:.0f}x")

    t = time.perf_counter()
    rs = meter.readout(model, tok, owl, reference=ref, system_prompt=owl.system_prompt,
                       base_ref=r)
    t_read_sys = time.perf_counter() - t
    ps = rs["probe"]
    for name, x, q in (("base", r, p), ("base + system prompt", rs, ps)):
        say(f"{name}: margin {q['mean_margin']:+.2f} [{q['margin_ci'][0]:+.2f}, "
            f"{q['margin_ci'][1]:+.2f}], owl first in {q['top1_share']:.0%}, rank "
            f"{q['mean_rank']:.1f}, owl mass {q['mean_mass']:.1%}, log P(owl) "
            f"{q['mean_logp']:.2f}; LLR {x['llr']['value']:+.4f} [{x['llr']['ci_low']:+.4f}, "
            f"{x['llr']['ci_high']:+.4f}]")
    d = ps["diff_vs_base"]["margin"]
    say(f"system - base margin: {d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] "
        f"(read-out with the system prompt: {t_read_sys:.1f} s)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (2 cores)")


if __name__ == "__main__":
    main()
