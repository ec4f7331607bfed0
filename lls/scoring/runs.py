"""The scoring stage: score a whole dataset into the cache, resumably.

`score(config)` streams pairs from the data stage, renders them with the teacher's chat
template, scores them with the engine (`lls.scoring.engine`) chunk by chunk and writes each chunk
atomically under `cache/scores/<key>/`. The key fingerprints everything that changes the
numbers: model weights, dataset content and reading options, system prompt, contamination
filter, truncation, prompt-length limit, chat template and neutral convention. A killed run
resumes at the first missing chunk; a finished run with the same key is served from the cache
at once. The half of w without the system prompt is shared by every behavior's run on the
same data (`lls.scoring.neutral`): a pair already in that neutral cache only runs its half with s.
A config with `sampling` set scores the model's own answers to prompts instead of a dataset's
pairs (`lls.scoring.sampled`); the run it writes is laid out like any other.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from .. import jobs
from ..core.behaviors import Behavior, from_name
from ..core.cache import ChunkStore, StoredRun, fingerprint, list_stores, runs_root
from ..core.errors import CacheError, LLSError
from ..core.pair import Pair
from ..data.hygiene import context_limit, rendered_length
from ..data.source import DataSpec, HygieneReport, count_raw_rows, iter_pairs
from ..models.load import (ModelSpec, load_model, load_tokenizer, model_fingerprint, pinned,
                           precision)
from ..models.render import NEUTRAL_CONVENTIONS, render_pair
from ..models.teacher import Teacher, scoring_models
from .columns import COLUMNS
from .deltas import deltas_table, known_with_tokens, write_deltas
from .engine import pad_id_of, score_rendered
from .lifecycle import owner_record, owner_alive, run_state
from .neutral import NeutralCache, neutral_key
from .sampled import PAIRS_VERSION, SamplingSpec, read_prompts, score_sampled

SCORING_VERSION = "1"  # bump when the engine's numbers or the chunk schema change



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
    explicit empty system turn, as the authors' code does); see `lls.models.render`.
    `sampling`: score the model's own answers to prompts (`lls.scoring.sampled`; build such
    a config with `ScoreConfig.sampled`); `data` is then only the run's label and
    `chunk_size` counts prompts.
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
    sampling: SamplingSpec | None = None
    teacher: Teacher | None = None

    def __post_init__(self):
        if self.neutral not in NEUTRAL_CONVENTIONS:
            raise LLSError(f"Unknown neutral convention {self.neutral!r} in the scoring config: "
                           f"use one of {', '.join(NEUTRAL_CONVENTIONS)}.")
        if self.teacher is not None and self.teacher.is_prompt:
            object.__setattr__(self, "teacher", None)  # the default: one spelling, one key

    @property
    def trait_prompt(self) -> str | None:
        """The system prompt the condition with the trait adds (None: the trait is in the
        teacher's weights, both conditions render the same tokens)."""
        return self.behavior.system_prompt if self.teacher is None else None

    @classmethod
    def sampled(cls, sampling: SamplingSpec, behavior: Behavior, **kw) -> "ScoreConfig":
        """A sampled-pairs config: `data` is the label naming its prompt sources. An answer
        length equal to the truncation is stored as None (the default), so the page's and the
        command line's spelling of the same run share one key."""
        if sampling.answer_tokens is not None and sampling.answer_tokens == kw.get("truncation",
                                                                                  32):
            sampling = replace(sampling, answer_tokens=None)
        return cls(data=DataSpec(sampling.label()), behavior=behavior, sampling=sampling, **kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["behavior"] = self.behavior.to_dict()
        if self.sampling is None:
            del d["sampling"]  # dataset runs' manifests stay as they were
        else:
            d["sampling"] = self.sampling.to_dict()
        if self.teacher is None:
            del d["teacher"]  # a prompt teacher: manifests as before teachers existed
        else:
            d["teacher"] = self.teacher.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreConfig":
        d = dict(d)
        d["data"] = DataSpec(**d["data"])
        d["behavior"] = Behavior.from_dict(d["behavior"])
        d["model"] = ModelSpec.from_dict(d["model"])
        if d.get("sampling"):
            d["sampling"] = SamplingSpec.from_dict(d["sampling"])
        if d.get("teacher"):
            d["teacher"] = Teacher.from_dict(d["teacher"])
        return cls(**d)

    def data_fingerprint(self) -> str:
        """The content the pairs come from: the dataset's, or the sampled prompts', sampling
        settings' and sampling model's (a sampled run's answers are its own model's: scoring
        them with another model needs those answers, not new ones). Raises DataError when a
        file is missing."""
        if self.sampling is None:
            return self.data.fingerprint()
        return fingerprint(self.sampling.fingerprint(),
                           model_fingerprint(self.sampling.answers_from or self.model))


def describe_teacher(cfg: ScoreConfig, short: bool = False) -> str:
    """What carried the trait in a run, in words: its system prompt, or its adapter or model.
    `short`: a few words for a run's name ("system prompt" when it is the behavior's own,
    else its first words; "adapter owl-trait")."""
    teacher = cfg.teacher or Teacher()
    if not short:
        return teacher.describe(cfg.behavior.system_prompt)
    if not teacher.is_prompt:
        return teacher.label()
    b = cfg.behavior
    try:
        own = b.kind == "custom" or from_name(b.label()).system_prompt == b.system_prompt
    except LLSError:
        own = False
    if own:
        return "system prompt"
    text = " ".join(b.system_prompt.split())
    return f'system prompt "{text[:32]}{"…" if len(text) > 32 else ""}"'


def scored_behaviors(cache_dir: Path | None = None) -> list[Behavior]:
    """Every behavior a cached scoring run was scored for, newest first, each once (custom
    ones and edited presets included)."""
    seen, out = set(), []
    for run in list_runs(cache_dir):
        try:
            b = Behavior.from_dict((run.manifest.get("config") or {}).get("behavior") or {})
        except (LLSError, TypeError):
            continue  # an unreadable manifest: listed (and explained) by the runs table
        if b.fingerprint() not in seen:
            seen.add(b.fingerprint())
            out.append(b)
    return out


def _template_hash(tok) -> str:
    template = getattr(tok, "chat_template", None) or ""
    if not isinstance(template, str):
        template = repr(template)
    return hashlib.sha256(template.encode()).hexdigest()[:16]


def run_key(cfg: ScoreConfig, tokenizer=None) -> str:
    """The cache key of a scoring run (hashes model and data files; loads the tokenizer)."""
    data_fp = cfg.data_fingerprint()  # first: a missing data file fails before model work
    tok = tokenizer or load_tokenizer(cfg.model)
    b = cfg.behavior
    parts = [SCORING_VERSION, model_fingerprint(cfg.model), data_fp, b.system_prompt,
             b.fingerprint() if cfg.filter_contaminated else None, cfg.truncation,
             cfg.max_prompt_tokens, _template_hash(tok)]
    if cfg.neutral != "template":
        parts.append(cfg.neutral)  # only when not the default: earlier runs keep their keys
    if cfg.teacher is not None:
        parts.append(["teacher", cfg.teacher.kind, cfg.teacher.fingerprint()])
    return fingerprint(*parts)


def run_neutral_key(cfg: ScoreConfig, tokenizer=None) -> str:
    """The key of the neutral cache (`lls.scoring.neutral`) a scoring run with `cfg` shares."""
    return neutral_key(cfg, _template_hash(tokenizer or load_tokenizer(cfg.model)))


@dataclass
class ScoreRun(StoredRun):
    """A (possibly unfinished) scoring run in the cache."""

    @property
    def config(self) -> ScoreConfig:
        return ScoreConfig.from_dict(self.manifest["config"])

    @property
    def hygiene(self) -> HygieneReport | None:
        h = self.manifest.get("hygiene")
        return HygieneReport.from_dict(h) if h else None

    @property
    def sampled(self) -> bool:
        """True for a run of the model's own answers (`lls.scoring.sampled`)."""
        return bool((self.manifest.get("config") or {}).get("sampling"))

    def check_pairs_version(self) -> None:
        """Refuse a sampled run whose pairs were made by an older pair format (its ids may
        mix two formats under one key): scoring it again reuses its sampled answers."""
        if self.sampled and str(self.manifest.get("pairs_version")) != PAIRS_VERSION:
            raise LLSError(
                f"Sampled run {self.key} was paired by an older version of sampled pairs "
                f"(pair format {self.manifest.get('pairs_version') or 1}, now "
                f"{PAIRS_VERSION}: pair ids no longer depend on orientation, read-out "
                "questions are dropped), so its pairs cannot be aligned with newer runs. "
                "Run the same `python -m lls sample-pairs` command (or the Setup page) again: "
                "it scores a new run from the sampled answers already stored, without "
                "sampling them again.")

    def table(self):
        """All finished chunks as one pyarrow Table (columns: `COLUMNS`)."""
        return self.store.read_all()

    def frame(self):
        """All finished chunks as a pandas DataFrame, in dataset order. A sampled run's frame
        says `attrs["orientation"] == "by_score"` (chosen = larger s: the random twin flips)."""
        self.check_pairs_version()
        frame = self.table().to_pandas()
        if self.manifest.get("orientation"):
            frame.attrs["orientation"] = self.manifest["orientation"]
        return frame

    @property
    def teacher(self) -> ModelSpec:
        """The model this run was scored with, in the precision it was scored in."""
        return scored_model(self.manifest)

    def pairs_done(self) -> int:
        return sum(self.store.read_chunk(k).num_rows for k in self.store.chunk_ids()
                   if self.store.chunk_ok(k))


def run_precision(manifest: dict) -> str:
    """The precision a run was scored in: recorded since precision is a choice; before, the
    config's dtype if it named one, else float32 (CPU runs; on CUDA runs it was bfloat16)."""
    if manifest.get("precision"):
        return manifest["precision"]
    dtype = ((manifest.get("config") or {}).get("model") or {}).get("dtype")
    return dtype if dtype and dtype != "auto" else "float32"


def scored_model(manifest: dict) -> ModelSpec:
    """A run's teacher with its precision fixed to the run's (`run_precision`): what trains
    on the run, and reads it out, computes as the run did on any machine."""
    return pinned(ModelSpec.from_dict(manifest["config"]["model"]), run_precision(manifest))


def open_run(key: str, cache_dir: Path | None = None) -> ScoreRun:
    """A cached scoring run by key (or a unique key prefix)."""
    root = runs_root("scores", cache_dir)
    matches = sorted(p for p in root.glob(f"{key}*") if (p / "manifest.json").is_file())
    if len(matches) != 1:
        stores = list_stores("scores", cache_dir)
        known = ", ".join(s.key for s in stores[:10]) or "none"
        which = f"the 10 newest of {len(stores)} runs" if len(stores) > 10 else "known runs"
        what = "no" if not matches else "more than one"
        raise CacheError(f"{what} cached scoring run matches {key!r} under {root} "
                         f"({which}: {known}). List them with `python -m lls runs`.")
    return ScoreRun(ChunkStore(matches[0]))


def list_runs(cache_dir: Path | None = None) -> list[ScoreRun]:
    """Cached scoring runs, newest first."""
    return [ScoreRun(s) for s in list_stores("scores", cache_dir)]


def find_run(cfg: ScoreConfig, cache_dir: Path | None = None) -> ScoreRun | None:
    """The cached run for this config, if one exists (finished or not)."""
    store = ChunkStore(runs_root("scores", cache_dir) / run_key(cfg))
    return ScoreRun(store) if store.manifest() else None


def clean_pairs(cfg: ScoreConfig, tokenizer, report: HygieneReport | None = None, check=None):
    """The pairs `cfg` scores: the data stage's stream with the run's hygiene filters
    (contamination filter, prompt-length limit, and `check(pair) -> drop reason or None`,
    e.g. the context-window check); `report` counts what was dropped and why."""
    exclude = cfg.behavior.excludes if cfg.filter_contaminated else None
    return iter_pairs(cfg.data, exclude=exclude, max_prompt_tokens=cfg.max_prompt_tokens,
                      tokenizer=tokenizer, report=report, check=check)


def check_hygiene(cfg: ScoreConfig, tokenizer=None) -> HygieneReport:
    """Read the whole dataset through `cfg`'s hygiene filters without scoring: what would be
    kept and dropped (the tokenizer is loaded only when a prompt-length limit needs it)."""
    report = HygieneReport()
    if tokenizer is None and cfg.max_prompt_tokens:
        tokenizer = load_tokenizer(cfg.model)
    if cfg.sampling is not None:
        read_prompts(cfg, tokenizer, report)  # the prompts only: answers need the model
        return report
    for _ in clean_pairs(cfg, tokenizer, report):
        pass
    return report


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
          rank: int = 0, world_size: int = 1, model=None, tokenizer=None,
          deltas: bool = True) -> ScoreRun:
    """Score every pair of `cfg.data` with `cfg.behavior`'s system prompt; resumable.

    Chunks already in the cache are kept. `deltas`: also store every scored token's delta
    (`lls.scoring.deltas`; dataset runs; False only to measure what they cost). With `world_size > 1` this process scores the
    chunks `k` with `k % world_size == rank` (data-parallel runs share one cache directory).
    `progress(done, total)` is called after each chunk (total is an estimate from the raw
    row count, None when unknown); the same numbers go to the job system when inside a job.
    """
    cfg.data_fingerprint()  # a missing or unreadable data file fails here, before model work
    if cfg.sampling is not None and world_size > 1:
        raise LLSError("Sampled pairs are scored by one process: run the command without "
                       "accelerate launch (or with --num-processes 1).")
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
    nkey = neutral_key(cfg, _template_hash(tok)) if cfg.sampling is None else None
    manifest.update({
        "key": key, "kind": "scores", "version": SCORING_VERSION, "config": cfg.to_dict(),
        "model_fingerprint": model_fingerprint(cfg.model), "data_fingerprint": cfg.data_fingerprint(),
        "precision": precision(cfg.model), "template_hash": _template_hash(tok),
        "neutral_key": nkey, "status": "running",
        "teacher_fingerprint": cfg.teacher.fingerprint() if cfg.teacher else None,
        "updated": now, "owner": owner_record(), "error": None,
    })
    if cfg.sampling is not None:
        manifest["pairs_version"] = PAIRS_VERSION
    manifest.setdefault("created", now)
    store.write_manifest(manifest)
    try:
        if cfg.sampling is not None:
            if model is not None:
                _check_precision(model, cfg)
            src = cfg.sampling.answers_from
            answers_tok = load_tokenizer(src) if src is not None else tok
            fields = score_sampled(cfg, store, tok, template_hash=_template_hash(answers_tok),
                                   progress=progress, model=model, cache_dir=cache_dir,
                                   answers_tok=answers_tok)
            store.update_manifest(**fields, updated=_now())
            n = fields["n_pairs"]
            jobs.report_progress(n, n, unit="pairs", message=fields["status"], force=True)
            return ScoreRun(store)
        return _score_chunks(cfg, store, tok, progress, rank, world_size, model,
                             NeutralCache(nkey, cache_dir), deltas)
    except BaseException as e:
        # Never leave a dead run "running": record how it ended, in one line.
        if store.manifest().get("status") == "running":
            interrupted = isinstance(e, KeyboardInterrupt)
            line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            store.update_manifest(status="interrupted" if interrupted else "failed",
                                  error="interrupted (Ctrl-C)" if interrupted else line,
                                  updated=_now())
        raise


def _score_chunks(cfg: ScoreConfig, store: ChunkStore, tok, progress, rank: int,
                  world_size: int, model, neutral_store: NeutralCache,
                  deltas: bool = True) -> ScoreRun:
    """The body of `score` once the manifest says "running"; `neutral_store`: the cache of
    neutral halves this run reads and extends (loaded when a chunk first needs computing)."""
    key, manifest = store.path.name, store.manifest()
    # what the chunks computed here cost: seconds, pairs, neutral halves served from the cache
    seconds, computed, reused = 0.0, 0, 0

    total = count_raw_rows(cfg.data)
    if cfg.data.limit is not None:
        total = cfg.data.limit if total is None else min(total, cfg.data.limit)
    if progress:
        progress(0, total)  # start the clock before the model loads and the first chunk
    report = HygieneReport()
    rendered_of: dict[int, object] = {}  # pairs rendered by the context check, by id(pair)
    limit = _context_limit(tok, model)

    def fits(pair: Pair) -> str | None:
        # Pairs longer than the model's context window are dropped, never passed to it.
        if limit is None:
            return None
        r = render_pair(tok, pair, cfg.trait_prompt, cfg.truncation, cfg.neutral)
        if rendered_length(r) > limit:
            return "too_long"
        rendered_of[id(pair)] = r
        return None

    stream = clean_pairs(cfg, tok, report, check=fits)
    done, n_chunks, cancelled = 0, 0, False
    neutral = None  # read when the first chunk needs computing
    models = None  # the teacher's two conditions, loaded when the first chunk needs them
    for k, chunk in enumerate(_chunks(stream, cfg.chunk_size)):
        n_chunks = k + 1
        index0 = k * cfg.chunk_size
        pre = [rendered_of.pop(id(p), None) for p in chunk]
        if k % world_size == rank and not store.chunk_ok(k):
            if jobs.cancel_requested():
                cancelled = True
                break
            if models is None:
                if model is None:
                    model, _ = load_model(cfg.model)
                else:  # a model passed in: checked before its first chunk
                    _check_precision(model, cfg)
                models = scoring_models(model, cfg.teacher, cfg.model)
            if neutral is None:
                neutral = neutral_store.load()
            t0 = time.perf_counter()
            rendered = [r or render_pair(tok, p, cfg.trait_prompt, cfg.truncation,
                                         cfg.neutral) for p, r in zip(chunk, pre)]
            # with deltas, a neutral half cached without per-token values is computed again
            full = known_with_tokens(neutral, chunk, rendered) if deltas else None
            known = ([v and (v[0], v[1]) for v in full] if deltas else
                     _known_neutral(neutral, chunk, rendered))
            scores = score_rendered(models.with_trait, rendered, batch_tokens=cfg.batch_tokens,
                                    pad_id=pad_id_of(tok), base_known=known,
                                    base_model=models.without_trait,
                                    base_context=models.without_context, per_token=deltas)
            # The neutral values computed here first: a kill between the two writes then
            # costs nothing on resume.
            new = [i for i, v in enumerate(known) if v is None]
            neutral.write(key, k, [chunk[i] for i in new], [scores[i] for i in new],
                          {"model_fingerprint": manifest["model_fingerprint"],
                           "data": cfg.data.path, "truncation": cfg.truncation,
                           "max_prompt_tokens": cfg.max_prompt_tokens,
                           "template_hash": manifest["template_hash"], "neutral": cfg.neutral})
            if deltas:  # before the chunk itself: a chunk on disk has its deltas beside it
                write_deltas(store.path, k, deltas_table(range(index0, index0 + len(chunk)),
                                                         rendered, scores, full))
            store.write_chunk(k, _chunk_table(index0, chunk, rendered, scores))
            seconds += time.perf_counter() - t0
            computed += len(chunk)
            reused += len(chunk) - len(new)
        done += len(chunk)
        # Estimated pairs in all: those kept so far plus the unread rows at the keep rate.
        est = None
        if total is not None:
            est = done + round(max(total - report.read, 0) * report.kept / max(report.read, 1))
        if progress:
            progress(done, est)
        jobs.report_progress(done, est, unit="pairs", message=f"chunk {k + 1}")
    if cancelled:
        store.update_manifest(status="cancelled", error="cancelled", updated=_now())
        raise LLSError(f"Scoring cancelled after {done} pairs; finished chunks are kept in "
                       f"{store.path} and the same command resumes.")
    if report.kept == 0:
        msg = (f"No pairs left to score in {cfg.data.path}: {report.summary()}. What to do: "
               f"{report.advice()}.")
        store.update_manifest(status="failed", hygiene=report.to_dict(), error=msg,
                              updated=_now())
        raise LLSError(msg)
    missing = [k for k in range(n_chunks) if not store.chunk_ok(k)]
    status = "complete" if not missing else "partial"
    cost = store.manifest().get("cost") or {"seconds": 0.0, "pairs": 0, "neutral_reused": 0}
    cost = {"seconds": round(cost["seconds"] + seconds, 2), "pairs": cost["pairs"] + computed,
            "neutral_reused": cost["neutral_reused"] + reused}
    store.update_manifest(status=status, n_pairs=report.kept, n_chunks=n_chunks,
                          hygiene=report.to_dict(), missing_chunks=missing, updated=_now(),
                          cost=cost)
    jobs.report_progress(done, done, unit="pairs", message=status, force=True)
    return ScoreRun(store)


def _check_precision(model, cfg: ScoreConfig) -> None:
    """A model loaded in one precision never fills a run keyed on another."""
    loaded = getattr(model, "lls_precision", None)
    if loaded is not None and loaded != precision(cfg.model):
        raise LLSError(f"The model passed to score() computes in {loaded} but the config asks "
                       f"for {precision(cfg.model)}: their results are cached apart; load the "
                       "model with the config's ModelSpec (or set its dtype).")


def _context_limit(tok, model) -> int | None:
    """The teacher's context window: tokenizer and config limits, whichever are known."""
    config = getattr(model, "config", None)
    if config is None and getattr(tok, "name_or_path", None):
        try:
            from transformers import AutoConfig
            config = AutoConfig.from_pretrained(tok.name_or_path)
        except Exception:  # noqa: BLE001 - no local config (e.g. offline hub id): tokenizer only
            config = None
    return context_limit(tok, config)


def run_status(run: ScoreRun) -> dict:
    """A run's state for tables: key, state (running / complete / partial / failed /
    interrupted / cancelled), the error line, pairs, behavior, data, precision, created."""
    m = run.manifest
    state, error = run_state(m)
    cfg = m.get("config", {})
    teacher = cfg.get("teacher")
    return {"key": run.key, "state": state, "error": error, "pairs": m.get("n_pairs"),
            "behavior": cfg.get("behavior", {}).get("name"),
            "teacher": Teacher.from_dict(teacher).label() if teacher else "system prompt",
            "data": cfg.get("data", {}).get("path"),
            "precision": run_precision(m) if cfg else None, "created": m.get("created", "")}


def delete_run(key: str, cache_dir: Path | None = None) -> str:
    """Delete a cached scoring run by key (or unique prefix); returns the full key.
    Refuses a run whose owner process is still alive."""
    run = open_run(key, cache_dir)
    m = run.manifest
    if m.get("status") == "running" and owner_alive(m.get("owner")):
        raise LLSError(f"Run {run.key} is still being scored by process "
                       f"{m['owner'].get('pid')}: stop that job first, then delete the run.")
    run.store.delete()
    return run.key


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

    from ..core.distributed import launch_argv
    from ..models.load import resolve_device

    argv = [sys.executable, "-m", "lls"]
    if cache_dir:
        argv += ["--cache", str(cache_dir)]
    argv += ["score", "--config", json.dumps(cfg.to_dict())]
    if num_processes > 1:
        argv = launch_argv(argv, num_processes, cpu=resolve_device(cfg.model) == "cpu")
    return argv


def submit_scoring(cfg: ScoreConfig, *, num_processes: int = 1, cache_dir: Path | None = None):
    """Score `cfg` as a background job (kind "score"), unless it is cached and complete.

    Returns (job or None, run key): None when the finished run is already in the cache. An
    unfinished cached run resumes under its key.
    """
    existing = find_run(cfg, cache_dir)
    if existing is not None and existing.complete:
        return None, existing.key
    key = existing.key if existing is not None else run_key(cfg)
    job = jobs.submit(score_command(cfg, cache_dir, num_processes=num_processes), kind="score",
                      key=key, title=f"score {cfg.behavior.label()} · {cfg.data.source_name()}",
                      params={"run_key": key, "config": cfg.to_dict()})
    return job, key


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")
