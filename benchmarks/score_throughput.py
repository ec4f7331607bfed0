"""Scoring engine vs the plain 4-forward baseline, same pairs, same model, one run.

Baseline: each of the 4 sequences of a pair as its own forward pass, in dataset order,
fixed batches of 8, right-padded, full logits (the reference implementation's method).
Engine: `lls.scoring.score_rendered` (prefix KV reuse, length-sorted token-budget batches,
LM head only at scored positions). Prints pairs/s of each, the ratio and max |delta w|.
Target: ratio >= 2.5, max |delta w| <= 1e-4 on the hh-rlhf test file.

`--dtype bfloat16`: the engine in float32 against the engine in bfloat16 (as shipped,
`lls.models.load.bf16_linears`; `--candidates` adds the other precision mixes of
`benchmarks/bf16_numerics.py`) on the same pairs, alternated chunk by chunk. Prints per
candidate `bf16_ratio` = float32 time / bfloat16 time (target >= 1.6: only where the CPU has
bfloat16 units, avx512_bf16 or amx_bf16; without them bfloat16 kernels are slower and the
ratio is below 1), `spearman` (target >= 0.99), `pearson`, `top10_overlap` (the share of
float32's top 10% that bfloat16 also puts in its top 10%; target >= 0.90 on >= 1,000 pairs)
and max |delta w|. `--emulate` computes the bfloat16 candidates' numbers with float32 kernels
(agreement only, minutes instead of hours where bfloat16 kernels are slow); `--check-real N`
then also runs the real bfloat16 path on the first N pairs and prints how far emulation is
from it.

    python benchmarks/score_throughput.py [--pairs 96] [--truncation 32]
    python benchmarks/score_throughput.py --dtype bfloat16 --pairs 1000 --emulate \
        --candidates linears,autocast,plain --check-real 48
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from lls.core import behaviors  # noqa: E402
from lls.core.stats import pearson, percentile_ci, resample_index, spearman, wilson  # noqa: E402
from lls.data.source import DataSpec, iter_pairs  # noqa: E402
from lls.models.load import ModelSpec, cpu_bf16_flag, load_model  # noqa: E402
from lls.models.render import render_pair  # noqa: E402
from lls.scoring.engine import score_plain, score_rendered, shared_prefix_len  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--truncation", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="bfloat16: float32 engine vs bfloat16 engine instead of engine vs plain")
    ap.add_argument("--candidates", default="linears",
                    help="bfloat16 mixes to compare, comma-separated: linears (shipped), "
                         "autocast, plain")
    ap.add_argument("--emulate", action="store_true",
                    help="bfloat16 numerics with float32 kernels (agreement only)")
    ap.add_argument("--check-real", type=int, default=0, metavar="N",
                    help="with --emulate: also run real bfloat16 on the first N pairs")
    ap.add_argument("--chunk", type=int, default=32, help="pairs per alternation step")
    ap.add_argument("--save", help="with --dtype bfloat16: write every model's w to this .npz "
                                   "after each chunk; run again to continue where it stopped")
    args = ap.parse_args()

    model, tok = load_model(ModelSpec(dtype="float32"))
    owl = behaviors.animal("owl")
    spec = DataSpec(args.data, limit=args.pairs)
    pairs = list(iter_pairs(spec, exclude=owl.excludes, tokenizer=tok,
                            max_prompt_tokens=args.max_prompt_tokens))
    rendered = [render_pair(tok, p, owl.system_prompt, args.truncation) for p in pairs]
    n = len(rendered)
    kw = {"batch_tokens": args.batch_tokens} if args.batch_tokens else {}
    if args.dtype == "bfloat16":
        return compare_bf16(model, tok, rendered, args, kw)

    score_rendered(model, rendered[:4], **kw)  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    fast = score_rendered(model, rendered, pad_id=tok.pad_token_id, **kw)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = score_plain(model, rendered, batch_size=8, pad_id=tok.pad_token_id)
    t_plain = time.perf_counter() - t0

    # FLOPs per pair (matmuls only: 2 x parameters per token through the body, 2 x H x V per
    # position the LM head is applied at; attention scores ignored, small at these lengths).
    cfgm = model.config
    h, v = cfgm.hidden_size, cfgm.vocab_size
    body = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    shared = [shared_prefix_len([r.prompt_sys for r in rendered]),
              shared_prefix_len([r.prompt_base for r in rendered])]
    eng_tokens = sum(len(r.prompt_sys) - shared[0] + len(r.prompt_base) - shared[1]
                     + 2 * (len(r.chosen_base) + len(r.rejected_base)) for r in rendered) / n
    scored = sum(2 * (len(r.chosen_base) + len(r.rejected_base)) for r in rendered) / n
    plain_tokens = sum(2 * (len(r.prompt_sys) + len(r.prompt_base))
                       + 2 * (len(r.chosen_base) + len(r.rejected_base)) for r in rendered) / n
    eng_flops = 2 * body * eng_tokens + 2 * h * v * scored
    plain_flops = (2 * body + 2 * h * v) * plain_tokens
    dw = max(abs(a.w - b.w) for a, b in zip(fast, plain))
    dl = max(max(abs(a.lc_s - b.lc_s), abs(a.lr_s - b.lr_s), abs(a.lc - b.lc), abs(a.lr - b.lr))
             for a, b in zip(fast, plain))
    print(f"pairs: {n} (hh-rlhf, prompts <= {args.max_prompt_tokens} tokens, "
          f"responses truncated to {args.truncation})")
    print(f"baseline (4 forwards, batch 8, padded): {n / t_plain:.3f} pairs/s ({t_plain:.1f} s)")
    print(f"engine (prefix reuse, sorted batches):  {n / t_fast:.3f} pairs/s ({t_fast:.1f} s)")
    print(f"ratio engine/baseline: {t_plain / t_fast:.2f} (target >= 2.5)")
    print(f"max |delta w|: {dw:.2e} (target <= 1e-4); max |delta summed log-prob|: {dl:.2e}")
    print(f"tokens per pair: engine {eng_tokens:.0f}, baseline {plain_tokens:.0f} (before padding); "
          f"FLOPs per pair: engine {eng_flops / 1e9:.1f} GFLOP, baseline {plain_flops / 1e9:.1f} GFLOP; "
          f"engine throughput {eng_flops * n / t_fast / 1e9:.0f} GFLOP/s")


def top_overlap(a, b, share: float = 0.10) -> float:
    """The share of a's top `share` that b also puts in its top `share`."""
    k = max(1, int(np.ceil(share * len(a))))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def agreement(a, b, n_boot: int = 0) -> dict:
    """Agreement of two weight vectors; with `n_boot`, 95% intervals too (Spearman and mean
    |delta w|: pairs resampled; top-10% overlap: Wilson's over float32's top 10%)."""
    out = {"spearman": spearman(a, b), "pearson": pearson(a, b), "top10": top_overlap(a, b),
           "max_dw": float(np.abs(a - b).max()), "mean_dw": float(np.abs(a - b).mean())}
    if n_boot:
        idx = resample_index(len(a), n_boot=n_boot)
        out["spearman_ci"] = percentile_ci([spearman(a[i], b[i]) for i in idx])
        out["mean_dw_ci"] = percentile_ci(np.abs(a - b)[idx].mean(1))
        k = max(1, int(np.ceil(0.10 * len(a))))
        out["top10_k"] = (round(out["top10"] * k), k)
        out["top10_ci"] = wilson(*out["top10_k"])
    return out


def compare_bf16(model, tok, rendered, args, kw) -> None:
    """float32 engine vs each bfloat16 candidate, alternated chunk by chunk on the same pairs."""
    from bf16_numerics import candidate

    names = [c.strip() for c in args.candidates.split(",") if c.strip()]
    models = {"float32": model}
    for name in names:
        models[name] = candidate(model, name, emulate=args.emulate)
    pad = tok.pad_token_id
    for m in models.values():
        score_rendered(m, rendered[:4], pad_id=pad, **kw)  # warm-up (allocator, kernels)
    w = {k: [] for k in models}
    secs = dict.fromkeys(models, 0.0)
    start, kept = 0, {}
    if args.save and Path(args.save).is_file():  # continue a stopped run (same pairs, order)
        saved = dict(np.load(args.save))
        if set(models) <= set(saved):
            start = min(len(saved[k]) for k in models)
            w = {k: saved[k][:start].tolist() for k in models}
            secs = {k: float(saved.get(f"seconds_{k}", 0.0)) for k in models}
            # candidates not asked for this time are kept in the file as they were
            kept = {k: v for k, v in saved.items() if k not in models and
                    not k.startswith("seconds")}
            print(f"continuing {args.save}: {start} pairs done", flush=True)
    for i in range(start, len(rendered), args.chunk):
        part = rendered[i:i + args.chunk]
        for k, m in models.items():
            t0 = time.perf_counter()
            w[k] += [s.w for s in score_rendered(m, part, pad_id=pad, **kw)]
            secs[k] += time.perf_counter() - t0
        if args.save:
            tmp = args.save + ".tmp.npz"
            np.savez(tmp, **kept, **{f"seconds_{k}": np.array(secs[k]) for k in models},
                     **{k: np.array(v) for k, v in w.items()})
            os.replace(tmp, args.save)
            print(f"  {len(w['float32'])} pairs", flush=True)
    n = len(rendered)
    a = np.array(w["float32"])
    flag = cpu_bf16_flag()
    print(f"pairs: {n} (hh-rlhf, owl, prompts <= {args.max_prompt_tokens} tokens, responses "
          f"truncated to {args.truncation}); alternated in chunks of {args.chunk}; "
          f"threads {__import__('torch').get_num_threads()}; CPU bfloat16 units: "
          f"{flag or 'none (no avx512_bf16 / amx_bf16 flag)'}")
    print(f"float32: {n / secs['float32']:.3f} pairs/s ({secs['float32']:.1f} s); "
          f"mean |w| {np.abs(a).mean():.4f}")
    for name in names:
        b = np.array(w[name])
        ag = agreement(a, b, n_boot=1000)
        how = "emulated with float32 kernels" if args.emulate else "real bfloat16 kernels"
        print(f"candidate {name} ({how}): {n / secs[name]:.3f} pairs/s ({secs[name]:.1f} s)")
        ratio = secs["float32"] / secs[name]
        note = ("emulation: a time, not a bfloat16 speed" if args.emulate else
                "here: no bfloat16 units, so below 1" if not flag else "")
        print(f"  bf16_ratio: {ratio:.2f} (target >= 1.6{'; ' + note if note else ''})")
        lo, hi = ag["spearman_ci"]
        print(f"  spearman: {ag['spearman']:.4f} [{lo:.4f}, {hi:.4f}] (target >= 0.99)  "
              f"pearson: {ag['pearson']:.4f}")
        (k, m), (lo, hi) = ag["top10_k"], ag["top10_ci"]
        print(f"  top10_overlap: {ag['top10']:.3f} ({k} of {m}) [{lo:.3f}, {hi:.3f}] (target "
              f">= 0.90)  max |delta w|: {ag['max_dw']:.4f}  mean |delta w|: "
              f"{ag['mean_dw']:.5f} [{ag['mean_dw_ci'][0]:.5f}, {ag['mean_dw_ci'][1]:.5f}]")
    if args.emulate and args.check_real:
        check_real(model, rendered[:args.check_real], names, w, pad, kw)


def check_real(model, rendered, names, emulated_w, pad, kw) -> None:
    """Emulated against real bfloat16 kernels on the first pairs.

    bfloat16 rounding is discontinuous: a difference far below one rounding step (another
    float32 summation order, another batch's padding) flips some roundings, and the flips
    spread through the layers until two bfloat16 computations of the same pair differ about
    as much as either differs from float32. So emulation cannot match real kernels digit for
    digit; it must match them in distribution. Printed: each one's distance to float32 on
    the same pairs (should be alike), emulated vs real, and (first candidate) real vs itself
    run with another batch budget (the spread the real kernel has anyway)."""
    from bf16_numerics import candidate

    n = len(rendered)
    a = np.array(emulated_w["float32"][:n])
    other = {**kw, "batch_tokens": max(64, kw.get("batch_tokens", 1024) // 4)}
    for i, name in enumerate(names):
        real = candidate(model, name)
        t0 = time.perf_counter()
        r = np.array([s.w for s in score_rendered(real, rendered, pad_id=pad, **kw)])
        t = time.perf_counter() - t0
        e = np.array(emulated_w[name][:n])

        def line(x, y):
            g = agreement(x, y)
            return (f"mean |delta w| {g['mean_dw']:.2e}, max {g['max_dw']:.2e}, spearman "
                    f"{g['spearman']:.4f}")

        print(f"check {name} on {n} pairs (real bfloat16 kernels: {t:.0f} s):")
        print(f"  real vs float32:     {line(a, r)}")
        print(f"  emulated vs float32: {line(a, e)}")
        print(f"  emulated vs real:    {line(e, r)}")
        if i == 0:  # the first candidate only: real bfloat16 kernels are slow here
            r2 = np.array([s.w for s in score_rendered(real, rendered, pad_id=pad, **other)])
            print(f"  real vs real, batch budget {other['batch_tokens']} tokens: {line(r, r2)}")
        del real


if __name__ == "__main__":
    main()
