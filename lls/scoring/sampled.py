"""Sampled pairs: the student's own answers as preference pairs, scored into an ordinary run.

Two answers of the model to one prompt, oriented by their LLS weight, are exactly what LLS
ranks, and they need no human label: their number has no ceiling but compute. A sampled run
(`ScoreConfig(sampling=SamplingSpec(...))`, see `lls.scoring.runs`) reads prompts
(`lls.data.prompts`: datasets' prompts, prompt files, bundled sets), samples k answers per
prompt from the scoring model (T 1, as long as the scoring truncation, each prompt seeded from
the run's seed and its own text), drops answers that are empty, show the behavior (its
contamination filter) or repeat another answer, scores each remaining answer once under both
conditions (`lls.scoring.answers`) and writes all k(k-1)/2 pairs per prompt, chosen = the
answer with the larger shift s, as a scoring run with the usual columns and manifest (a
pair's id, `<prompt id>:a<i>-a<j>`, names its two answers whatever their orientation, so a
control run's pairs align with the target's: `lls.scoring.contrastive`): the
explorer, selection, export, training, studies and Chat use it unchanged.

Chunks of `chunk_size` prompts are the unit of resume. Each chunk's answers are stored first
under `cache/samples/<sample key>/` (behavior-free: another behavior's run on the same prompts
and settings reuses them), then its pairs under the run; a kill loses at most the chunk in
progress, and a resumed chunk samples the same answers (per-prompt seeds).

The random twin of a sampled run must not inherit this orientation (chosen = larger s is
already an LLS choice): the manifest says `"orientation": "by_score"` and the twin flips a
seeded coin per pair (`lls.scoring.selection.twin_flips`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .. import jobs
from ..core.cache import ChunkStore, atomic_write_json, fingerprint, read_json_safe, runs_root
from ..core.errors import LLSError
from ..core.pair import Pair
from ..data.hygiene import HygieneReport, asks_readout, context_limit, reach
from ..data.prompts import PromptItem, PromptSource, iter_prompts
from ..models.generation import sample, seed_for
from ..models.load import ModelSpec, load_model, model_fingerprint
from ..models.teacher import ScoringModels, scoring_models
from ..models.render import truncate_text
from .answers import answer_pairs, render_answers, score_prompt_answers
from .engine import pad_id_of
from .columns import COLUMNS

SAMPLES_VERSION = "1"  # bump when the stored answers' meaning or schema changes
# Bump when the pairs made from the same answers change (ids, orientation, which prompts
# pair): it enters the run's key, not the answer store's, so stored answers are reused.
# 2: ids `<prompt>:a<i>-a<j>` name the two answers whatever their orientation (1 named
# chosen first), and prompts that are read-out questions are dropped.
PAIRS_VERSION = "2"
ORIENTATION = "by_score"  # manifest value: chosen is the answer with the larger s


@dataclass(frozen=True)
class SamplingSpec:
    """How a sampled run gets its pairs. `sources`: where prompts come from, read in order.
    `k`: answers per prompt (pairs per prompt: k(k-1)/2). `n_prompts`: stop after this many
    clean prompts (None: all). `answer_tokens`: new tokens per answer (None: the run's
    truncation). `temperature`, `seed`: the sampler's. `first_turn`: also use the first user
    turn of multi-turn conversations (else they are dropped)."""

    sources: tuple[PromptSource, ...]
    k: int = 4
    n_prompts: int | None = None
    answer_tokens: int | None = None
    temperature: float = 1.0
    seed: int = 0
    first_turn: bool = False
    # The model whose sampled answers are paired, when not the scoring model: a student
    # scoring the teacher's own answers (`lls.scoring.transfer`), never sampling new ones.
    answers_from: ModelSpec | None = None

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        if isinstance(self.answers_from, dict):
            object.__setattr__(self, "answers_from", ModelSpec.from_dict(self.answers_from))
        if not self.sources:
            raise LLSError("Sampled pairs need at least one prompt source (a dataset, a prompt "
                           "file or a bundled prompt set).")
        if self.k < 2:
            raise LLSError(f"Sampled pairs need at least 2 answers per prompt, got k={self.k}.")
        if self.n_prompts is not None and self.n_prompts < 1:
            raise LLSError(f"n_prompts must be at least 1 (or None for all), got {self.n_prompts}.")
        if self.temperature <= 0:
            raise LLSError("Sampled pairs need a temperature above 0: greedy decoding gives "
                           "k identical answers.")

    def label(self) -> str:
        """The run's data label, e.g. "sampled: a.jsonl.gz + bundled:general (k 4)"."""
        return f"sampled: {' + '.join(s.name() for s in self.sources)} (k {self.k})"

    def fingerprint(self) -> str:
        """Content of every source and every setting that changes the pairs."""
        return fingerprint("sampled", SAMPLES_VERSION, [s.fingerprint() for s in self.sources],
                           self.k, self.n_prompts, self.answer_tokens, self.temperature,
                           self.seed, self.first_turn, "pairs", PAIRS_VERSION)

    def to_dict(self) -> dict:
        d = {"sources": [s.to_dict() for s in self.sources], "k": self.k,
             "n_prompts": self.n_prompts, "answer_tokens": self.answer_tokens,
             "temperature": self.temperature, "seed": self.seed, "first_turn": self.first_turn}
        if self.answers_from is not None:  # runs of their own answers keep their manifests
            d["answers_from"] = self.answers_from.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingSpec":
        d = dict(d)
        d["sources"] = tuple(PromptSource.from_dict(s) for s in d["sources"])
        return cls(**d)


def answer_tokens(cfg) -> int:
    """New tokens per sampled answer: the spec's, else the run's truncation."""
    n = cfg.sampling.answer_tokens or cfg.truncation
    if not n:
        raise LLSError("Sampled pairs need an answer length: set the truncation (the paper's "
                       "32 tokens) or the answer length.")
    return int(n)


def prompt_seed(seed: int, item: PromptItem) -> int:
    """The seed of one prompt's answers: from the run's seed and the prompt's own text, so a
    prompt gets the same answers whatever chunk or position it is in."""
    return seed_for("sampled", seed, item.text())


def read_prompts(cfg, tokenizer, report: HygieneReport | None = None) -> list[PromptItem]:
    """The prompts a sampled config samples (prompt hygiene counted in `report`)."""
    s = cfg.sampling
    return list(iter_prompts(s.sources, first_turn=s.first_turn,
                             max_prompt_tokens=cfg.max_prompt_tokens, tokenizer=tokenizer,
                             report=report, limit=s.n_prompts))


def answers_model(cfg) -> ModelSpec:
    """The model whose answers a sampled config pairs: its own, or `answers_from`'s."""
    return cfg.sampling.answers_from or cfg.model


def samples_key(cfg, template_hash: str) -> str:
    """The key of the answer store a sampled config uses: everything that changes the answers
    (not the behavior, not `n_prompts`: a longer run reuses a shorter one's chunks).
    `template_hash`: the chat template of the model that samples (`answers_model`)."""
    s = cfg.sampling
    return fingerprint("samples", SAMPLES_VERSION, model_fingerprint(answers_model(cfg)),
                       template_hash,
                       [src.fingerprint() for src in s.sources], s.first_turn,
                       cfg.max_prompt_tokens, s.k, answer_tokens(cfg), s.temperature, s.seed,
                       cfg.chunk_size)


def sample_answers(model, tokenizer, items: list[PromptItem], *, k: int, max_new_tokens: int,
                   temperature: float, seed: int) -> list[list[str]]:
    """k answers per prompt, all prompts of a chunk decoded together, each prompt seeded by
    `prompt_seed` (results do not depend on which prompts are sampled together)."""
    return sample(model, tokenizer, [it.messages for it in items], n=k, temperature=temperature,
                  max_new_tokens=max_new_tokens, seed=seed,
                  seeds=[prompt_seed(seed, it) for it in items])


class _Answers:
    """The behavior-free answer store: chunk k holds the answers to the run's chunk k."""

    def __init__(self, path: Path, info: dict):
        self.store = ChunkStore(path)
        if not self.store.manifest():
            self.store.write_manifest({"kind": "samples", "version": SAMPLES_VERSION, **info})

    def read(self, k: int, items: list[PromptItem]) -> list[list[str]] | None:
        """The stored answers of chunk k, None unless stored for exactly these prompts."""
        t = self.store.read_chunk(k)
        if t is None or t.column("prompt").to_pylist() != [it.text() for it in items]:
            return None
        return [list(a) for a in t.column("answers").to_pylist()]

    def write(self, k: int, items: list[PromptItem], answers: list[list[str]]) -> None:
        import pyarrow as pa

        self.store.write_chunk(k, pa.table({"id": [it.id for it in items],
                                            "prompt": [it.text() for it in items],
                                            "answers": answers}))

    # The half without the trait of each answer (log P(answer | p) by the scoring model
    # without its trait, the scored tokens under one truncation and neutral convention) is
    # the same for every behavior and teacher: kept here, a second run on these answers
    # scores only its half with the trait. One file per scoring model (a student may score
    # another model's answers); values keyed by the answer's rendered token ids, so nothing
    # is ever guessed.
    def _neutral_path(self, k: int, scorer: str, truncation, neutral: str) -> Path:
        return self.store.path / f"neutral-{scorer}-{truncation}-{neutral}-{k:06d}.json"

    def neutral(self, k: int, scorer: str, truncation, neutral: str) -> dict:
        return read_json_safe(self._neutral_path(k, scorer, truncation, neutral)) or {}

    def write_neutral(self, k: int, scorer: str, truncation, neutral: str,
                      values: dict) -> None:
        old = self.neutral(k, scorer, truncation, neutral)
        atomic_write_json(self._neutral_path(k, scorer, truncation, neutral),
                          {**old, **values})


def _clean_answers(cfg, tok, item: PromptItem, answers: list[str], report: HygieneReport
                   ) -> list[int]:
    """Indices of the answers kept for pairing (empty, showing the behavior, or repeating an
    earlier answer's scored text are dropped and counted)."""
    exclude = cfg.behavior.excludes if cfg.filter_contaminated else None
    kept, seen = [], set()
    for j, a in enumerate(answers):
        aid = f"{item.id}:a{j}"
        scored = truncate_text(tok, a, cfg.truncation).strip()
        if not scored:
            report.drop("empty_answer", aid)
        elif exclude is not None and exclude(Pair(aid, [], a, "")):
            report.drop("answer_filtered", aid)
        elif scored in seen:
            report.drop("identical_answer", aid)
        else:
            seen.add(scored)
            kept.append(j)
    return kept


def _answer_key(prompt_base: list[int], answer_base: list[int]) -> str:
    """The neutral half's key: the rendered prompt and answer ids without the trait."""
    return hashlib.sha256(json.dumps([prompt_base, answer_base]).encode()).hexdigest()[:24]


def pairs_table(cfg, tok, models, items: list[PromptItem], answers: list[list[str]],
                index0: int, limit: int | None, report: HygieneReport,
                neutral_store: dict | None = None):
    """One chunk's pair rows (pyarrow Table, `COLUMNS`) from its prompts and answers;
    `report` counts prompts kept (with at least one pair) and everything dropped. `models`:
    the teacher's two conditions (`lls.models.teacher.ScoringModels`) or one model for both."""
    if not hasattr(models, "with_trait"):
        models = ScoringModels(models, models)
    import pyarrow as pa

    exclude = cfg.behavior.excludes if cfg.filter_contaminated else None
    todo = []  # (item, its answers, kept answer indices, rendered)
    for item, ans in zip(items, answers):
        if exclude is not None and exclude(Pair(item.id, item.messages, "", "")):
            report.drop("filtered", item.id)  # the prompt itself shows the behavior
            continue
        if not item.source.startswith("bundled:") and asks_readout(item.messages):
            # a dataset's or file's prompt that a read-out asks: dropped here, after the
            # answers (the answer store's chunks stay as sampled). A bundled set is chosen
            # as a read-out set on purpose, with the in-sample warning.
            report.drop("readout_question", item.id)
            continue
        kept = _clean_answers(cfg, tok, item, ans, report)
        r = render_answers(tok, item.messages, [ans[j] for j in kept], cfg.trait_prompt,
                           cfg.truncation, cfg.neutral) if len(kept) >= 2 else None
        if r is not None and limit is not None and r.length() > limit:
            # Answers past the model's context window are dropped, never passed to it.
            fits = [j for j, a_s, a_b in zip(kept, r.answers_sys, r.answers_base)
                    if reach(r.prompt_sys, r.prompt_base, a_s, a_b) <= limit]
            for j in kept:
                if j not in fits:
                    report.drop("too_long", f"{item.id}:a{j}")
            kept = fits
            r = render_answers(tok, item.messages, [ans[j] for j in kept],
                               cfg.trait_prompt, cfg.truncation,
                               cfg.neutral) if len(kept) >= 2 else None
        if r is None:
            report.drop("few_answers", item.id)
            continue
        report.kept += 1
        todo.append((item, ans, kept, r))
    keys = [[_answer_key(r.prompt_base, a) for a in r.answers_base] for *_, r in todo]
    store = neutral_store if neutral_store is not None else {}
    known = [[store[k][0] for k in ks] if all(k in store for k in ks) else None
             for ks in keys]
    scores = score_prompt_answers(models.with_trait, [t[3] for t in todo],
                                  batch_tokens=cfg.batch_tokens, pad_id=pad_id_of(tok),
                                  models=models, base_known=known)
    for ks, sc in zip(keys, scores):
        for k, lp, n in zip(ks, sc.lp_base, sc.n):
            store[k] = [lp, n]
    cols = {c: [] for c in COLUMNS}
    for (item, ans, kept, r), sc in zip(todo, scores):
        prompt = json.dumps(item.messages, ensure_ascii=False)
        for c, rj, ps in answer_pairs(sc):
            row = {"index": index0 + len(cols["index"]),
                   "id": f"{item.id}:a{min(kept[c], kept[rj])}-a{max(kept[c], kept[rj])}",
                   "source": item.source,
                   "prompt": prompt, "chosen": ans[kept[c]], "rejected": ans[kept[rj]],
                   "chosen_scored": r.texts[c], "rejected_scored": r.texts[rj],
                   "prompt_tokens": len(r.prompt_base), "lc_s": ps.lc_s, "lr_s": ps.lr_s,
                   "lc": ps.lc, "lr": ps.lr, "n_c": ps.n_c, "n_r": ps.n_r, "w": ps.w}
            for name in COLUMNS:
                cols[name].append(row[name])
    schema = pa.schema([(c, pa.int64() if c in ("index", "prompt_tokens", "n_c", "n_r") else
                         pa.float64() if c in ("lc_s", "lr_s", "lc", "lr", "w") else pa.string())
                        for c in COLUMNS])
    return pa.table(cols, schema=schema)


def _merge(into: HygieneReport, part: dict) -> None:
    into.kept += part["kept"]
    for r, n in part["dropped"].items():
        into.dropped[r] = into.dropped.get(r, 0) + n
        ex = into.examples.setdefault(r, [])
        ex.extend(part["examples"].get(r, [])[:max(0, 5 - len(ex))])


def _hygiene_path(store: ChunkStore, k: int) -> Path:
    return store.path / f"hygiene-{k:06d}.json"


def score_sampled(cfg, store: ChunkStore, tok, *, template_hash: str, progress=None,
                  model=None, cache_dir: Path | None = None, answers_tok=None) -> dict:
    """Sample, filter, score and pair every chunk of a sampled config into `store` (resuming
    at the first missing chunk); returns the manifest fields of the finished run. Raises
    LLSError when cancelled or when no pair is left. With `answers_from` the answers are
    read from the store that model's own run filled (its prompts read with its tokenizer,
    `answers_tok`, so its chunks come out the same; `template_hash`: its template)."""
    s = cfg.sampling
    report = HygieneReport()
    items = read_prompts(cfg, answers_tok or tok, report)
    report.kept = 0  # from here on: prompts that gave at least one pair
    size = max(1, cfg.chunk_size)
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    if progress:
        progress(0, len(items))
    answers_key = samples_key(cfg, template_hash)
    answer_store = _Answers(runs_root("samples", cache_dir) / answers_key,
                            {"key": answers_key, "sampling": s.to_dict(),
                             "model": cfg.model.to_dict(), "answer_tokens": answer_tokens(cfg)})
    limit, models = None, None
    totals = {"answers": 0, "seconds_sampling": 0.0, "seconds_scoring": 0.0}
    index0, done = 0, 0
    for k, chunk in enumerate(chunks):
        stored = read_json_safe(_hygiene_path(store, k))
        part = {"report": stored} if stored and store.chunk_ok(k) else None
        if part is None:
            if jobs.cancel_requested():
                store.update_manifest(status="cancelled", error="cancelled")
                raise LLSError(f"Sampling cancelled after {done} prompts; finished chunks are "
                               f"kept in {store.path} and the same command resumes.")
            if models is None:
                if model is None:
                    model, _ = load_model(cfg.model)
                models = scoring_models(model, cfg.teacher, cfg.model)
            if limit is None:
                limit = context_limit(tok, getattr(model, "config", None))
            jobs.report_progress(done, len(items), unit="prompts", force=True,
                                 message=f"sampling chunk {k + 1} of {len(chunks)}")
            part = _chunk(cfg, tok, models, k, chunk, answer_store, index0, limit)
            # The counts first: a chunk on disk always has its hygiene beside it.
            atomic_write_json(_hygiene_path(store, k), part["report"])
            store.write_chunk(k, part.pop("table"))
        _merge(report, part["report"])
        for key in totals:
            totals[key] += part["report"].get(key, 0)
        index0 += part["report"]["pairs"]
        done += len(chunk)
        if progress:
            progress(done, len(items))
        jobs.report_progress(done, len(items), unit="prompts",
                             message=f"chunk {k + 1} of {len(chunks)}: {index0} pairs")
    if index0 == 0:
        msg = (f"No pairs left from {s.label()}: {report.describe('prompts')}. What to do: "
               f"{report.advice()}.")
        store.update_manifest(status="failed", hygiene=report.to_dict(), error=msg)
        raise LLSError(msg)
    missing = [k for k in range(len(chunks)) if not store.chunk_ok(k)]
    return {"status": "complete" if not missing else "partial", "n_pairs": index0,
            "n_chunks": len(chunks), "hygiene": report.to_dict(), "missing_chunks": missing,
            "orientation": ORIENTATION, "pairs_version": PAIRS_VERSION,
            "sampled": {"prompts": len(items), "prompts_paired": report.kept,
                        "answers": totals["answers"], "pairs": index0,
                        "answers_key": answers_key,
                        "seconds_sampling": round(totals["seconds_sampling"], 1),
                        "seconds_scoring": round(totals["seconds_scoring"], 1)}}


def _chunk(cfg, tok, models, k: int, chunk: list[PromptItem], answer_store: _Answers,
           index0: int, limit: int | None) -> dict:
    """Answers (stored or sampled now) and pairs of chunk k; its hygiene and timings.
    `models`: the teacher's two conditions (`lls.models.teacher.ScoringModels`); answers
    are the base model's (the student's), sampled without the trait."""
    s = cfg.sampling
    t0 = time.perf_counter()
    answers = answer_store.read(k, chunk)
    if answers is None and s.answers_from is not None:
        raise LLSError(f"The answers of {s.answers_from.label} to chunk {k + 1} of these "
                       "prompts are not in the answer store, and a run scoring another "
                       "model's answers never samples them itself: finish that model's own "
                       "sampled run first (the same sample-pairs settings, that model), then "
                       "score again.")
    if answers is None:
        with models.without_context():
            answers = sample_answers(models.base, tok, chunk, k=s.k,
                                     max_new_tokens=answer_tokens(cfg),
                                     temperature=s.temperature, seed=s.seed)
        answer_store.write(k, chunk, answers)
    t1 = time.perf_counter()
    rep = HygieneReport()
    scorer = model_fingerprint(cfg.model)
    neutral = answer_store.neutral(k, scorer, cfg.truncation, cfg.neutral)
    before = len(neutral)
    table = pairs_table(cfg, tok, models, chunk, answers, index0, limit, rep, neutral)
    if len(neutral) > before:
        answer_store.write_neutral(k, scorer, cfg.truncation, cfg.neutral, neutral)
    t2 = time.perf_counter()
    return {"table": table, "report": {**rep.to_dict(), "pairs": table.num_rows,
                                       "answers": sum(len(a) for a in answers),
                                       "seconds_sampling": t1 - t0, "seconds_scoring": t2 - t1}}
