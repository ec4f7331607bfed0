"""The scoring stage: score a whole dataset into the cache, resumably.

`score(config)` streams pairs from the data stage, renders them with the teacher's chat
template, scores them with the engine (`lls.engine`) chunk by chunk and writes each chunk
atomically under `cache/scores/<key>/`. The key fingerprints everything that changes the
numbers: model weights, dataset content and reading options, system prompt, contamination
filter, truncation, prompt-length limit, chat template and neutral convention. A killed run
resumes at the first missing chunk; a finished run with the same key is served from the cache
at once. The half of w without the system prompt is shared by every behavior's run on the
same data (`lls.neutral`): a pair already in that neutral cache only runs its half with s.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from . import jobs
from .behaviors import Behavior
from .cache import ChunkStore, fingerprint, list_stores, runs_root
from .data import DataSpec, HygieneReport, count_raw_rows, iter_pairs
from .engine import score_rendered
from .errors import CacheError, LLSError
from .models import ModelSpec, load_model, load_tokenizer, model_fingerprint
from .neutral import NeutralCache, neutral_key
from .pair import Pair
from .render import NEUTRAL_CONVENTIONS, render_pair

SCORING_VERSION = "1"  # bump when the engine's numbers or the chunk schema change

COLUMNS = ("index", "id", "source", "prompt", "chosen", "rejected", "chosen_scored",
           "rejected_scored", "prompt_tokens", "lc_s", "lr_s", "lc", "lr", "n_c", "n_r", "w")


@dataclass(frozen=True)
class ScoreConfig:
    """Everything a scoring run depends on.

    `truncation`: responses are cut to this many teacher tokens before rendering (paper: 32;
    None keeps them whole). `max_prompt_tokens`: longer prompts are dropped by hygiene (None
    keeps all). `filter_contaminated`: drop pairs that already show the behavior.
    `chunk_size`: pairs per cached chunk (the unit of resume and of progress updates; a
    resumed run keeps the chunk size it started with, so it is not part of the key).
    `neutral`: what the condition without the system prompt renders, "template" (the
    prompt as given: the chat template may insert its default system turn) or "empty" (an
    explicit empty system turn, as the authors' code does); see `lls.render`.
    """

    data: DataSpec
    behavior: Behavior
    model: ModelSpec = field(default_factory=ModelSpec)
    truncation: int | None = 32
    max_prompt_tokens: int | None = 512
    filter_contaminated: bool = True
    chunk_size: int = 128
    batch_tokens: int = 1024  # engine batch budget: speed only, not part of the key
    neutral: str = "template"

    def __post_init__(self):
        if self.neutral not in NEUTRAL_CONVENTIONS:
            raise LLSError(f"Unknown neutral convention {self.neutral!r} in the scoring config: "
                           f"use one of {', '.join(NEUTRAL_CONVENTIONS)}.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["behavior"] = self.behavior.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreConfig":
        d = dict(d)
        d["data"] = DataSpec(**d["data"])
        d["behavior"] = Behavior.from_dict(d["behavior"])
        d["model"] = ModelSpec.from_dict(d["model"])
        return cls(**d)


def _template_hash(tok) -> str:
    template = getattr(tok, "chat_template", None) or ""
    if not isinstance(template, str):
        template = repr(template)
    return hashlib.sha256(template.encode()).hexdigest()[:16]


def run_key(cfg: ScoreConfig, tokenizer=None) -> str:
    """The cache key of a scoring run (hashes model and data files; loads the tokenizer)."""
    data_fp = cfg.data.fingerprint()  # first: a missing data file fails before model work
    tok = tokenizer or load_tokenizer(cfg.model)
    b = cfg.behavior
    parts = [SCORING_VERSION, model_fingerprint(cfg.model), data_fp, b.system_prompt,
             b.fingerprint() if cfg.filter_contaminated else None, cfg.truncation,
             cfg.max_prompt_tokens, _template_hash(tok)]
    if cfg.neutral != "template":
        parts.append(cfg.neutral)  # only when not the default: earlier runs keep their keys
    return fingerprint(*parts)


def run_neutral_key(cfg: ScoreConfig, tokenizer=None) -> str:
    """The key of the neutral cache (`lls.neutral`) a scoring run with `cfg` shares."""
    return neutral_key(cfg, _template_hash(tokenizer or load_tokenizer(cfg.model)))


@dataclass
class ScoreRun:
    """A (possibly unfinished) scoring run in the cache."""

    store: ChunkStore

    @property
    def key(self) -> str:
        return self.store.key

    @property
    def manifest(self) -> dict:
        return self.store.manifest()

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def config(self) -> ScoreConfig:
        return ScoreConfig.from_dict(self.manifest["config"])

    @property
    def hygiene(self) -> HygieneReport | None:
        h = self.manifest.get("hygiene")
        return HygieneReport.from_dict(h) if h else None

    def table(self):
        """All finished chunks as one pyarrow Table (columns: `COLUMNS`)."""
        return self.store.read_all()

    def frame(self):
        """All finished chunks as a pandas DataFrame, in dataset order."""
        return self.table().to_pandas()

    def pairs_done(self) -> int:
        return sum(self.store.read_chunk(k).num_rows for k in self.store.chunk_ids()
                   if self.store.chunk_ok(k))


def open_run(key: str, cache_dir: Path | None = None) -> ScoreRun:
    """A cached scoring run by key (or a unique key prefix)."""
    root = runs_root("scores", cache_dir)
    matches = sorted(p for p in root.glob(f"{key}*") if (p / "manifest.json").is_file())
    if len(matches) != 1:
        known = ", ".join(s.key for s in list_stores("scores", cache_dir)[:10]) or "none"
        what = "no" if not matches else "more than one"
        raise CacheError(f"{what} cached scoring run matches {key!r} under {root} "
                         f"(known runs: {known}). List them with `python -m lls runs`.")
    return ScoreRun(ChunkStore(matches[0]))


def list_runs(cache_dir: Path | None = None) -> list[ScoreRun]:
    """Cached scoring runs, newest first."""
    return [ScoreRun(s) for s in list_stores("scores", cache_dir)]


def find_run(cfg: ScoreConfig, cache_dir: Path | None = None) -> ScoreRun | None:
    """The cached run for this config, if one exists (finished or not)."""
    store = ChunkStore(runs_root("scores", cache_dir) / run_key(cfg))
    return ScoreRun(store) if store.manifest() else None


def _chunks(pairs, size: int):
    buf = []
    for p in pairs:
        buf.append(p)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def _chunk_table(index0: int, pairs: list[Pair], rendered, scores):
    import pyarrow as pa

    cols = {c: [] for c in COLUMNS}
    for i, (p, r, s) in enumerate(zip(pairs, rendered, scores)):
        row = {"index": index0 + i, "id": p.id, "source": p.source, "prompt": p.prompt_json(),
               "chosen": p.chosen, "rejected": p.rejected, "chosen_scored": r.chosen_text,
               "rejected_scored": r.rejected_text, "prompt_tokens": len(r.prompt_base),
               "lc_s": s.lc_s, "lr_s": s.lr_s, "lc": s.lc, "lr": s.lr, "n_c": s.n_c,
               "n_r": s.n_r, "w": s.w}
        for c in COLUMNS:
            cols[c].append(row[c])
    return pa.table(cols)


ProgressFn = Callable[[int, int | None], None]


def score(cfg: ScoreConfig, *, cache_dir: Path | None = None, progress: ProgressFn | None = None,
          rank: int = 0, world_size: int = 1, model=None, tokenizer=None) -> ScoreRun:
    """Score every pair of `cfg.data` with `cfg.behavior`'s system prompt; resumable.

    Chunks already in the cache are kept. With `world_size > 1` this process scores the
    chunks `k` with `k % world_size == rank` (data-parallel runs share one cache directory).
    `progress(done, total)` is called after each chunk (total is an estimate from the raw
    row count, None when unknown); the same numbers go to the job system when inside a job.
    """
    cfg.data.fingerprint()  # a missing or unreadable data file fails here, before model work
    tok = tokenizer or load_tokenizer(cfg.model)
    key = run_key(cfg, tok)
    store = ChunkStore(runs_root("scores", cache_dir) / key)
    manifest = store.manifest()
    if manifest.get("config") and manifest["config"]["chunk_size"] != cfg.chunk_size:
        # Chunks are the unit of resume: keep the layout the run started with.
        cfg = replace(cfg, chunk_size=manifest["config"]["chunk_size"])
    if manifest.get("status") == "complete" and all(store.chunk_ok(k) for k in
                                                    range(manifest.get("n_chunks", 0))):
        if progress:
            progress(manifest["n_pairs"], manifest["n_pairs"])
        return ScoreRun(store)
    now = _dt.datetime.now().isoformat(timespec="seconds")
    nkey = neutral_key(cfg, _template_hash(tok))
    manifest.update({
        "key": key, "kind": "scores", "version": SCORING_VERSION, "config": cfg.to_dict(),
        "model_fingerprint": model_fingerprint(cfg.model), "data_fingerprint": cfg.data.fingerprint(),
        "template_hash": _template_hash(tok), "neutral_key": nkey, "status": "running",
        "updated": now,
    })
    manifest.setdefault("created", now)
    store.write_manifest(manifest)

    total = count_raw_rows(cfg.data)
    if cfg.data.limit is not None:
        total = cfg.data.limit if total is None else min(total, cfg.data.limit)
    if progress:
        progress(0, total)  # start the clock before the model loads and the first chunk
    report = HygieneReport()
    exclude = cfg.behavior.excludes if cfg.filter_contaminated else None
    stream = iter_pairs(cfg.data, exclude=exclude, max_prompt_tokens=cfg.max_prompt_tokens,
                        tokenizer=tok, report=report)
    done, n_chunks, cancelled = 0, 0, False
    neutral = None  # read when the first chunk needs computing
    for k, chunk in enumerate(_chunks(stream, cfg.chunk_size)):
        n_chunks = k + 1
        index0 = k * cfg.chunk_size
        if k % world_size == rank and not store.chunk_ok(k):
            if jobs.cancel_requested():
                cancelled = True
                break
            if model is None:
                model, _ = load_model(cfg.model)
            if neutral is None:
                neutral = NeutralCache(nkey, cache_dir).load()
            rendered = [render_pair(tok, p, cfg.behavior.system_prompt, cfg.truncation,
                                    cfg.neutral) for p in chunk]
            known = _known_neutral(neutral, chunk, rendered)
            scores = score_rendered(model, rendered, batch_tokens=cfg.batch_tokens,
                                    pad_id=tok.pad_token_id or 0, base_known=known)
            # The neutral values computed here first: a kill between the two writes then
            # costs nothing on resume.
            new = [i for i, v in enumerate(known) if v is None]
            neutral.write(key, k, [chunk[i] for i in new], [scores[i] for i in new],
                          {"model_fingerprint": manifest["model_fingerprint"],
                           "data": cfg.data.path, "truncation": cfg.truncation,
                           "max_prompt_tokens": cfg.max_prompt_tokens,
                           "template_hash": manifest["template_hash"], "neutral": cfg.neutral})
            store.write_chunk(k, _chunk_table(index0, chunk, rendered, scores))
        done += len(chunk)
        # Estimated pairs in all: those kept so far plus the unread rows at the keep rate.
        est = None
        if total is not None:
            est = done + round(max(total - report.read, 0) * report.kept / max(report.read, 1))
        if progress:
            progress(done, est)
        jobs.report_progress(done, est, unit="pairs", message=f"chunk {k + 1}")
    if cancelled:
        store.update_manifest(status="cancelled", updated=_now())
        raise LLSError(f"Scoring cancelled after {done} pairs; finished chunks are kept in "
                       f"{store.path} and the same command resumes.")
    if report.kept == 0:
        store.update_manifest(status="failed", hygiene=report.to_dict(), updated=_now())
        raise LLSError(f"No pairs left to score in {cfg.data.path}: {report.summary()}.")
    missing = [k for k in range(n_chunks) if not store.chunk_ok(k)]
    status = "complete" if not missing else "partial"
    store.update_manifest(status=status, n_pairs=report.kept, n_chunks=n_chunks,
                          hygiene=report.to_dict(), missing_chunks=missing, updated=_now())
    jobs.report_progress(done, done, unit="pairs", message=status, force=True)
    return ScoreRun(store)


def _known_neutral(neutral: NeutralCache, pairs: list[Pair], rendered) -> list:
    """(lc, lr) per pair from the neutral cache, None where it must be computed (not cached,
    or cached with token counts that differ from this rendering: recompute, never guess)."""
    out = []
    for v, r in zip(neutral.lookup(pairs), rendered):
        ok = v is not None and (v[2], v[3]) == (len(r.chosen_base), len(r.rejected_base))
        out.append((v[0], v[1]) if ok else None)
    return out


def score_command(cfg: ScoreConfig, cache_dir: Path | None = None,
                  num_processes: int = 1) -> list[str]:
    """The argv that scores `cfg` headless (what a background scoring job runs); with
    `num_processes > 1`, an `accelerate launch` of that many processes sharing the chunks."""
    import json
    import sys

    from .distributed import launch_argv
    from .models import resolve_device

    argv = [sys.executable, "-m", "lls"]
    if cache_dir:
        argv += ["--cache", str(cache_dir)]
    argv += ["score", "--config", json.dumps(cfg.to_dict())]
    if num_processes > 1:
        argv = launch_argv(argv, num_processes, cpu=resolve_device(cfg.model) == "cpu")
    return argv


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def score_one(model, tokenizer, pair: Pair, system_prompt: str, truncation: int | None = 32):
    """Score a single pair (used for explanations and tests)."""
    r = render_pair(tokenizer, pair, system_prompt, truncation)
    return score_rendered(model, [r], pad_id=tokenizer.pad_token_id or 0)[0]

