"""Per-token deltas for runs scored without them: computed on demand, chunk by chunk.

Runs scored before deltas were stored (and sampled runs) have weights but no per-token
deltas. `backfill(run)` runs the teacher over each chunk that lacks them, with both halves
(the neutral half comes from the neutral cache when it holds per-token values, and is added
to it otherwise, so a second behavior on the same data only runs its half with s), and
writes the chunk of deltas (`lls.scoring.deltas`). Resumable: a chunk written is kept, and a
killed or cancelled backfill goes on at the next missing chunk. Each pair is rendered from
its scored texts, exactly as scoring rendered it; a pair whose recomputed token counts differ
from the stored ones gets no deltas (never guessed), and the largest difference between the
recomputed and the stored weight is recorded (it measures numerical noise only).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .. import jobs
from ..core.errors import LLSError
from ..core.pair import Pair
from ..models.load import load_model, load_tokenizer
from ..models.render import render_pair
from ..models.teacher import scoring_models
from .deltas import chunks_missing, deltas_table, known_with_tokens, token_store, write_deltas
from .engine import pad_id_of, score_rendered
from .neutral import NeutralCache
from .runs import ScoreRun, open_run


def _pairs(table) -> list[Pair]:
    """The scored pairs of one chunk, with the texts that were scored."""
    cols = table.select(["id", "prompt", "chosen_scored", "rejected_scored", "source"]
                        ).to_pydict()
    return [Pair(id=i, prompt=json.loads(p), chosen=c, rejected=r, source=s or "")
            for i, p, c, r, s in zip(cols["id"], cols["prompt"], cols["chosen_scored"],
                                     cols["rejected_scored"], cols["source"])]


def backfill(run: ScoreRun, *, progress=None, model=None, tokenizer=None,
             cache_dir: Path | None = None) -> dict:
    """Compute and store the deltas of every chunk of `run` that has none; returns a summary
    (chunks and pairs computed, seconds, pairs without deltas, the largest |w recomputed - w
    stored|). `progress(done, total)` counts pairs. Raises LLSError when cancelled."""
    if not run.complete:
        raise LLSError(f"Run {run.key} is not finished ({run.manifest.get('status')}): finish "
                       "scoring it first (the same score command resumes it).")
    if run.manifest.get("synthetic"):
        raise LLSError(f"Run {run.key} is synthetic: there is no model behind its scores, so it "
                       "has no per-token deltas.")
    cfg = run.config
    todo = chunks_missing(run)
    store, tokens = run.store, token_store(run.path)
    sizes = {k: store.read_chunk(k).num_rows for k in store.chunk_ids()}
    total, done = sum(sizes.values()), sum(n for k, n in sizes.items() if k not in todo)
    summary = {"run": run.key, "chunks": len(todo), "pairs": 0, "seconds": 0.0,
               "no_deltas": 0, "max_w_diff": 0.0}
    if progress:
        progress(done, total)
    jobs.report_progress(done, total, unit="pairs", message="per-token deltas", force=True)
    if not todo:
        return summary
    tok = tokenizer or load_tokenizer(cfg.model)
    nkey = run.manifest.get("neutral_key")
    neutral = NeutralCache(nkey, cache_dir).load() if nkey else None
    models = None
    for k in todo:
        if jobs.cancel_requested():
            raise LLSError(f"Per-token deltas cancelled after {done} of {total} pairs; the "
                           "chunks finished are kept and the same command goes on.")
        if model is None:
            model, _ = load_model(cfg.model)
        if models is None:  # the run's teacher: its prompt, adapter or model, as when scored
            models = scoring_models(model, cfg.teacher, cfg.model)
        t0 = time.perf_counter()
        table = store.read_chunk(k)
        pairs = _pairs(table)
        # the scored texts are already truncated: rendering them as they are gives the tokens
        rendered = [render_pair(tok, p, cfg.trait_prompt, None, cfg.neutral)
                    for p in pairs]
        full = known_with_tokens(neutral, pairs, rendered) if neutral else [None] * len(pairs)
        scores = score_rendered(models.with_trait, rendered, batch_tokens=cfg.batch_tokens,
                                pad_id=pad_id_of(tok), per_token=True,
                                base_known=[v and (v[0], v[1]) for v in full],
                                base_model=models.without_trait,
                                base_context=models.without_context)
        n_c, n_r = table.column("n_c").to_numpy(), table.column("n_r").to_numpy()
        same = np.array([(len(r.chosen_base), len(r.rejected_base)) == (a, b)
                         for r, a, b in zip(rendered, n_c, n_r)])
        keep = [s if ok else None for s, ok in zip(scores, same)]
        if neutral is not None:
            new = [i for i, v in enumerate(full) if v is None and same[i]]
            neutral.write(run.key, k, [pairs[i] for i in new], [scores[i] for i in new],
                          {"data": cfg.data.path, "truncation": cfg.truncation,
                           "neutral": cfg.neutral, "written_by": "backfill"})
        chunk = deltas_table(table.column("index").to_numpy(), rendered, keep, full)
        write_deltas(run.path, k, chunk)
        w_new = np.array([s.w for s in scores])[same]
        w_old = table.column("w").to_numpy()[same]
        if len(w_new):
            summary["max_w_diff"] = max(summary["max_w_diff"],
                                        float(np.abs(w_new - w_old).max()))
        summary["no_deltas"] += int(chunk.column("c_ids").null_count)
        summary["pairs"] += len(pairs)
        summary["seconds"] += time.perf_counter() - t0
        done += len(pairs)
        if progress:
            progress(done, total)
        jobs.report_progress(done, total, unit="pairs", message=f"per-token deltas, chunk {k + 1}")
    summary["seconds"] = round(summary["seconds"], 2)
    tokens.update_manifest(kind="deltas", run=run.key, backfilled=True,
                           last_backfill=summary)
    return summary


def backfill_command(key: str, cache_dir: Path | None = None) -> list[str]:
    """The argv that backfills a run's deltas headless (what a background job runs)."""
    argv = [sys.executable, "-m", "lls"]
    if cache_dir:
        argv += ["--cache", str(cache_dir)]
    return argv + ["deltas", "--run", key]


def submit_backfill(key: str, cache_dir: Path | None = None):
    """Backfill a run's deltas as a background job (kind "deltas"); None when it has them."""
    run = open_run(key, cache_dir)
    if not chunks_missing(run):
        return None
    return jobs.submit(backfill_command(run.key, cache_dir), kind="deltas",
                       key=f"deltas-{run.key}", title=f"per-token deltas · {run.key[:10]}",
                       params={"run_key": run.key})
