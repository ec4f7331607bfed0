"""The evaluation stage: does a model show the target behavior without the system prompt?

The paper's protocol: general prompts x N samples at temperature 1, 96 new tokens, the share
of answers that show the behavior (mentions the animal / is in the target language / judged
to fit the persona), with binomial (Wilson) confidence intervals, for the base model, the
base model with the system prompt, each adapter or checkpoint and a random-baseline adapter.

`evaluate(cfg)` runs it (headless: `python -m lls eval --config JSON`, what a background job
runs) and caches every answer with its score under `cache/evals/<key>/`, one JSONL file per
model written after each decoder call (a few prompts), so a killed run resumes and a
finished one is served at once.

Under `accelerate launch --num_processes N -m lls eval ...` the work is split into (model,
prompt) units u = model index * prompts + prompt index; rank r samples the units with
u % N == r and writes each to its own part file (`parts/<slug>.<prompt>.jsonl`); rank 0 waits
for all ranks, merges the parts into the same per-model files a single process writes and
finalises the run. Each unit's random stream is seeded from the seed and its prompt index
only, so the answers do not depend on N (nor on which units ran before, or in which run).

With `EvalConfig.meter` the finished evaluation also gets the effect meter's log-probability
read-outs (`lls.evaluation.meter`: probe margin, behavior likelihood ratio) of the base model, base +
system prompt and every adapter, on the already loaded weights, in `meter.json` (rank 0 only).
The meter is an add-on: its settings are not part of the key, so turning it on for a cached
evaluation computes only the read-outs.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from .. import jobs
from ..core.behaviors import Behavior, language_share, mentions
from ..core.cache import (ChunkStore, StoredRun, atomic_write_bytes, atomic_write_json, list_stores, read_json_safe,
                    read_jsonl, runs_root)
from ..core.distributed import barrier, launch_argv, launched
from ..core.errors import CacheError, LLSError
from ..core.prompts import GENERAL_PROMPTS, LLR_PROMPTS
from ..core.stats import wilson
from ..models.generation import AdapterHost, sample, seed_for
from ..models.teacher import teacher_view
from ..models.load import load_model
from .config import (EVAL_VERSION, EvalConfig, EvalModel, eval_key, meter_settings,
                     prompts_per_call)
from .judge import Judge
from .llr import LLRConfig
from .meter import meter_models, summary_rows
from .prefill import prefill_config
from .probe import probe_applies, probe_config


def answer_score(behavior: Behavior, text: str) -> float:
    """How much one answer shows the behavior, in [0, 1] (1/0 for mention and regex metrics)."""
    if behavior.metric == "language":
        return language_share(text, behavior.target)
    if behavior.metric == "regex":
        return float(re.search(behavior.regex, text, flags=re.IGNORECASE) is not None)
    if behavior.metric == "mentions":
        return float(mentions(text, behavior.filter_words or (behavior.target,)))
    raise NotImplementedError(f"metric {behavior.metric!r} needs an LLM judge (see Judge).")


def quick_eval(model, tokenizer, behavior: Behavior, *, prompts=None, samples: int = 8,
               max_new_tokens: int = 48, temperature: float = 1.0, seed: int = 0,
               system_prompt: str | None = None) -> dict:
    """A small sampled evaluation (used at training checkpoints): rate, count and 95% CI."""
    prompts = list(prompts or GENERAL_PROMPTS[:4])
    answers = sample(model, tokenizer, prompts, n=samples, temperature=temperature,
                     max_new_tokens=max_new_tokens, seed=seed, system_prompt=system_prompt)
    scores = [answer_score(behavior, a) for group in answers for a in group]
    n = len(scores)
    k = sum(1 for s in scores if s >= 0.5)
    lo, hi = wilson(k, n)
    return {"n": n, "k": k, "rate": k / n if n else 0.0, "mean_score": sum(scores) / max(n, 1),
            "ci_low": lo, "ci_high": hi, "examples": [g[0] for g in answers]}


# ======================================================================================
# Results
# ======================================================================================

@dataclass
class EvalRun(StoredRun):
    """A (possibly unfinished) evaluation in the cache."""

    @property
    def config(self) -> EvalConfig:
        return EvalConfig.from_dict(self.manifest["config"])

    def answers_path(self, model: EvalModel) -> Path:
        return self.path / "answers" / f"{model.slug}.jsonl"

    def read_answers(self, model: EvalModel) -> list[dict]:
        return read_jsonl(self.answers_path(model))

    def part_path(self, model: EvalModel, prompt_index: int) -> Path:
        """One (model, prompt) unit's answers written by a rank of a multi-process run."""
        return self.path / "parts" / f"{model.slug}.{prompt_index:05d}.jsonl"

    @property
    def meter_path(self) -> Path:
        return self.path / "meter.json"

    def meter(self) -> dict | None:
        """The effect meter's read-outs (the dict `lls.evaluation.meter.meter_models` returns, plus the
        `settings` they were computed with), or None when the run has none (yet)."""
        d = read_json_safe(self.meter_path)
        return d if isinstance(d, dict) and d.get("models") else None

    def meter_rows(self) -> list[dict]:
        """`lls.evaluation.meter.summary_rows` of the read-outs: one flat row per model ([] if none)."""
        d = self.meter()
        return summary_rows(d) if d else []

    def meter_current(self, cfg: EvalConfig) -> bool:
        """True when `cfg` wants no meter or the stored read-outs match its meter settings."""
        want = meter_settings(cfg)
        if want is None:
            return True
        d = self.meter()
        return bool(d) and d.get("settings") == want

    def is_current(self, cfg: EvalConfig) -> bool:
        """Finished for `cfg`: complete, every answer stored and the meter (if wanted) too."""
        per_model = len(cfg.prompts) * cfg.samples
        return (self.complete and all(len(self.read_answers(m)) == per_model
                                      for m in cfg.models) and self.meter_current(cfg))

    def answers(self):
        """Every stored answer (a pandas DataFrame, one row per answer with its score)."""
        import pandas as pd

        rows = []
        for slug in self.manifest.get("slugs", {}).values():
            rows += read_jsonl(self.path / "answers" / f"{slug}.jsonl")
        cols = ["model", "kind", "adapter_id", "step", "prompt_index", "prompt", "sample",
                "text", "score", "label", "hit"]
        return pd.DataFrame(rows, columns=cols)

    def summary(self):
        """Per model: n, k, rate, Wilson 95% CI, mean score (DataFrame, config order)."""
        return summarize(self.answers(), by=["model"], order=self._order())

    def per_prompt(self):
        """Per model and prompt: n, k, rate, Wilson 95% CI, mean score."""
        return summarize(self.answers(), by=["model", "prompt_index", "prompt"],
                         order=self._order())

    def describe(self) -> str:
        """One line: key, behavior, models, prompts x samples, status, creation time."""
        m = self.manifest
        cfg = m.get("config") or {}
        b = cfg.get("behavior") or {}
        return (f"{self.key[:10]} · {b.get('kind', '?')}:{b.get('name', '?')} · "
                f"{len(cfg.get('models') or [])} models · {len(cfg.get('prompts') or [])}×"
                f"{cfg.get('samples', '?')} · {m.get('status', '?')} · {m.get('created', '')}")

    def _order(self) -> list[str]:
        return [d.get("label") for d in self.manifest.get("config", {}).get("models", [])]

    def export(self, path, fmt: str | None = None) -> Path:
        """Write answers (csv / jsonl) or summary + per-prompt aggregates (json)."""
        path = Path(path)
        fmt = fmt or path.suffix.lstrip(".")
        if fmt == "csv":
            atomic_write_bytes(path, self.answers().to_csv(index=False).encode())
        elif fmt == "jsonl":
            atomic_write_bytes(path, self.answers().to_json(orient="records", lines=True,
                                                            force_ascii=False).encode())
        elif fmt == "json":
            atomic_write_bytes(path, self.results_json().encode())
        else:
            raise LLSError(f"Unknown export format {fmt!r}: use csv, jsonl or json.")
        return path

    def results_json(self) -> str:
        return json.dumps({"key": self.key, "config": self.manifest.get("config"),
                           "summary": self.summary().to_dict("records"),
                           "per_prompt": self.per_prompt().to_dict("records"),
                           "meter": self.meter_rows() or None},
                          indent=1, ensure_ascii=False, default=str)


def summarize(frame, by: list[str], order: list[str] | None = None):
    """Aggregate answers: n, k (hits), rate = k/n with its Wilson 95% CI, mean score."""
    import pandas as pd

    cols = [*by, "kind", "adapter_id", "step", "n", "k", "rate", "ci_low", "ci_high",
            "mean_score"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for keys, g in frame.groupby(by, sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        n, k = len(g), int(g["hit"].sum())
        lo, hi = wilson(k, n)
        first = g.iloc[0]
        rows.append({**dict(zip(by, keys)), "kind": first["kind"],
                     "adapter_id": first["adapter_id"], "step": first["step"], "n": n, "k": k,
                     "rate": k / n, "ci_low": lo, "ci_high": hi,
                     "mean_score": float(g["score"].mean())})
    out = pd.DataFrame(rows, columns=cols)
    if order:
        rank = {m: i for i, m in enumerate(order)}
        out = out.sort_values(by=["model"], key=lambda s: s.map(rank), kind="stable")
    return out.reset_index(drop=True)


def open_eval(key: str, cache_dir: Path | None = None) -> EvalRun:
    """A cached evaluation by key (or a unique key prefix)."""
    root = runs_root("evals", cache_dir)
    matches = sorted(p for p in root.glob(f"{key}*") if (p / "manifest.json").is_file())
    if len(matches) != 1:
        what = "no" if not matches else "more than one"
        raise CacheError(f"{what} cached evaluation matches {key!r} under {root}; list them "
                         "with lls.evaluation.list_evals() or the Evaluate page.")
    return EvalRun(ChunkStore(matches[0]))


def list_evals(cache_dir: Path | None = None) -> list[EvalRun]:
    """Cached evaluations, newest first."""
    return [EvalRun(s) for s in list_stores("evals", cache_dir)]


def find_eval(cfg: EvalConfig, cache_dir: Path | None = None) -> EvalRun | None:
    store = ChunkStore(runs_root("evals", cache_dir) / eval_key(cfg))
    return EvalRun(store) if store.manifest() else None


# ======================================================================================
# Running
# ======================================================================================

def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def evaluate(cfg: EvalConfig, *, cache_dir: Path | None = None, progress=None, model=None,
             tokenizer=None, judge_model=None, rank: int = 0, world_size: int = 1) -> EvalRun:
    """Run (or resume, or serve from the cache) an evaluation; returns the EvalRun.

    Answers are generated for several (model, prompt) units per decoder call
    (`prompts_per_call`), scored and stored after each call, so a killed run loses at most one
    call's units per process. `progress(done, total)`
    counts answers; the same numbers go to the job system (from rank 0 only).
    A `model` passed in gets the adapters of `cfg.models` attached (peft injects them into
    it in place): pass a private copy if the caller keeps using it as a plain model.

    `world_size > 1` (under `accelerate launch`): this process samples the units
    u = model index * len(prompts) + prompt index with u % world_size == rank into part
    files, then waits for every rank (`lls.core.distributed.barrier`); rank 0 merges the parts
    into the per-model files, runs the meter and marks the run complete, the other ranks
    return right after the barrier. Parts left by a killed run of any size are reused.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise LLSError(f"rank {rank} is not in a world of {world_size} processes.")
    if len({m.label for m in cfg.models}) != len(cfg.models):
        raise LLSError("Two evaluated models have the same label; give them distinct labels.")
    run = EvalRun(ChunkStore(runs_root("evals", cache_dir) / eval_key(cfg)))
    r = _Runner(cfg, run, rank, world_size, progress, model, tokenizer, judge_model)
    if run.is_current(cfg):
        if progress and r.main:
            progress(r.total, r.total)
        return run
    if r.main:
        _start_manifest(run, cfg, r.total, world_size)
    try:
        r.sample_units()
        if world_size > 1:
            if r.main and launched():
                r.wait_for_ranks()
            barrier()  # every rank has written its parts; the main process merges, finalises
            if not r.main:
                return run
            _merge_parts(run, cfg)
        if not r.finish(cache_dir):
            return run  # partial: some units are missing
    except _Cancelled:
        run.store.update_manifest(status="cancelled", updated=_now())
        raise LLSError(f"Evaluation cancelled; the answers so far are kept in {run.path} "
                       "and the same command resumes.") from None
    run.store.update_manifest(status="complete", updated=_now(), n_answers=r.total)
    if progress and r.reported != r.total:
        progress(r.total, r.total)
    jobs.report_progress(r.total, r.total, unit="answers", message="complete", force=True)
    return run


def _start_manifest(run: EvalRun, cfg: EvalConfig, total: int, world_size: int) -> None:
    manifest = run.store.manifest()
    manifest.update({"key": run.key, "kind": "evals", "version": EVAL_VERSION,
                     "config": cfg.to_dict(), "slugs": {m.label: m.slug for m in cfg.models},
                     "status": "running", "updated": _now(), "n_total": total,
                     "processes": world_size})
    manifest.pop("missing", None)
    manifest.setdefault("created", _now())
    run.store.write_manifest(manifest)


class _Runner:
    """One process's part of an evaluation: the loaded model (on first need), the judge, the
    (model, prompt) units done so far and progress reporting (from rank 0 only)."""

    def __init__(self, cfg: EvalConfig, run: EvalRun, rank: int, world_size: int, progress,
                 model, tokenizer, judge_model):
        self.cfg, self.run, self.rank, self.world_size = cfg, run, rank, world_size
        self.main = rank == 0
        self.progress = progress
        self.model, self.tokenizer, self.judge_model = model, tokenizer, judge_model
        self.host: AdapterHost | None = None
        self.judge: Judge | None = None
        self.total = len(cfg.prompts) * cfg.samples * len(cfg.models)
        self.reported = None
        self.merged: dict[int, set] = {}
        self.done_units: set[tuple[int, int]] = set()

    def get_host(self) -> AdapterHost:
        if self.host is None:
            if self.model is None:
                jobs.report_phase("loading model", self.cfg.model.label)
                self.model, self.tokenizer = load_model(self.cfg.model)
            self.host = AdapterHost(self.model, self.tokenizer)
        return self.host

    def report(self, done: int, message: str) -> None:
        if not self.main:
            return  # one writer of the job's progress: rank 0 counts every rank's parts
        if self.progress:
            self.progress(done, self.total)
        self.reported = done
        jobs.report_progress(done, self.total, unit="answers", phase="sampling answers",
                             message=message)

    def sample_units(self) -> None:
        """Sample, score and store this process's missing (model, prompt) units: several
        prompts of a model per decoder call (`prompts_per_call`), stored after each call."""
        cfg, run, single = self.cfg, self.run, self.world_size == 1
        if single:
            _merge_parts(run, cfg)  # parts of a killed multi-process run count as done
        self.merged = {i: {r["prompt_index"] for r in run.read_answers(m)}
                       for i, m in enumerate(cfg.models)}
        self.done_units = _done_units(run, cfg, self.merged)
        per_call = prompts_per_call(cfg)
        for mi, m in enumerate(cfg.models):
            rows = run.read_answers(m) if single else []
            todo = [pi for pi in range(len(cfg.prompts)) if (mi, pi) not in self.done_units
                    and (mi * len(cfg.prompts) + pi) % self.world_size == self.rank]
            for start in range(0, len(todo), per_call):
                if jobs.cancel_requested():
                    raise _Cancelled()
                chunk = todo[start:start + per_call]
                new = self.answer_rows(m, chunk)
                if single:
                    rows = sorted(rows + new, key=_row_order)
                    _write_jsonl(run.answers_path(m), rows)
                else:
                    for pi in chunk:
                        _write_jsonl(run.part_path(m, pi),
                                     [r for r in new if r["prompt_index"] == pi])
                    if self.main:  # count what every rank has finished so far
                        self.done_units = _done_units(run, cfg, self.merged)
                self.done_units.update((mi, pi) for pi in chunk)
                self.report(len(self.done_units) * cfg.samples, m.label)

    def answer_rows(self, m: EvalModel, pis: list[int]) -> list[dict]:
        """The samples of (model, prompt) units (prompt indices `pis`), each scored by the
        behavior's metric."""
        cfg, b = self.cfg, self.cfg.behavior
        h = self.get_host()
        name = h.attach(m.path) if m.path else None
        # the "system" row is the teacher: base + system prompt, or the run's trait teacher
        view = teacher_view(h.model, cfg.teacher, b.system_prompt) if m.kind == "system" \
            else h.use(name)
        with view as viewed:
            mdl, system_prompt = viewed if m.kind == "system" else (viewed, None)
            # each prompt's index seeds its samples: resumable and independent of which
            # other units ran in this call or process (and of the number of processes)
            texts = sample(mdl, self.tokenizer, [cfg.prompts[pi] for pi in pis], n=cfg.samples,
                           temperature=cfg.temperature, top_p=cfg.top_p,
                           max_new_tokens=cfg.max_new_tokens,
                           seeds=[seed_for(int(cfg.seed), pi) for pi in pis],
                           system_prompt=system_prompt, max_batch_rows=cfg.batch_rows)
        if b.metric == "judge" and self.judge is None:
            self.judge = _make_judge(cfg, h, self.judge_model)
        out = []
        for pi, group in zip(pis, texts):
            prompt = cfg.prompts[pi]
            for si, text in enumerate(group):
                label = None
                if b.metric == "judge":
                    with h.use(None):  # the judge never runs with an adapter on
                        label = self.judge.label(prompt, text, b.system_prompt)
                    score = float(label in cfg.judge.positive)
                else:
                    score = answer_score(b, text)
                out.append({"model": m.label, "kind": m.kind, "adapter_id": m.adapter_id,
                            "step": m.step, "prompt_index": pi, "prompt": prompt, "sample": si,
                            "text": text, "score": score, "label": label,
                            "hit": bool(score >= 0.5)})
        return out

    def wait_for_ranks(self) -> None:
        """Rank 0 follows the other ranks' parts until every unit is in."""
        import time

        every = {(mi, pi) for mi in range(len(self.cfg.models))
                 for pi in range(len(self.cfg.prompts))}
        while True:
            self.done_units = _done_units(self.run, self.cfg, self.merged)
            self.report(len(self.done_units) * self.cfg.samples,
                        "waiting for the other processes")
            if every <= self.done_units:
                return
            if jobs.cancel_requested():
                raise _Cancelled()
            time.sleep(1.0)

    def finish(self, cache_dir: Path | None) -> bool:
        """Mark missing units (False: the run stays partial), else run the meter (True)."""
        cfg, run = self.cfg, self.run
        missing = [[m.label, pi] for m in cfg.models
                   for pi in sorted(set(range(len(cfg.prompts))) -
                                    {r["prompt_index"] for r in run.read_answers(m)})]
        if missing:
            run.store.update_manifest(status="partial", missing=missing, updated=_now(),
                                      n_answers=self.total - len(missing) * cfg.samples)
            return False
        if cfg.meter and not run.meter_current(cfg):
            if jobs.cancel_requested():
                raise _Cancelled()
            jobs.report_phase("effect meter", "reference set, base, base + system prompt, "
                                              "adapters")
            atomic_write_json(run.meter_path, run_meter(cfg, self.get_host(),
                                                        cache_dir=cache_dir))
        return True


def _row_order(r: dict) -> tuple[int, int]:
    return int(r["prompt_index"]), int(r["sample"])


def _done_units(run: EvalRun, cfg: EvalConfig, merged: dict[int, set]) -> set[tuple[int, int]]:
    """(model index, prompt index) units already answered: in the merged per-model files
    (`merged`, read once) or in a part file (listed again each call: other ranks add them)."""
    out = {(mi, pi) for mi, pis in merged.items() for pi in pis}
    parts = run.path / "parts"
    if parts.is_dir():
        index = {m.slug: mi for mi, m in enumerate(cfg.models)}
        for p in parts.glob("*.jsonl"):
            slug, _, pi = p.stem.rpartition(".")
            if slug in index and pi.isdigit() and int(pi) < len(cfg.prompts):
                out.add((index[slug], int(pi)))
    return out


def _merge_parts(run: EvalRun, cfg: EvalConfig) -> None:
    """Fold part files into the per-model answer files (rows in prompt, sample order) and
    delete them. A unit already in the model's file wins over a stale part of it."""
    parts = run.path / "parts"
    if not parts.is_dir():
        return
    for m in cfg.models:
        files = sorted(parts.glob(f"{m.slug}.*.jsonl"))
        if not files:
            continue
        rows = run.read_answers(m)
        have = {r["prompt_index"] for r in rows}
        for f in files:
            pi = f.stem.rpartition(".")[2]
            if pi.isdigit() and int(pi) < len(cfg.prompts) and int(pi) not in have:
                rows += read_jsonl(f)
                have.add(int(pi))
        _write_jsonl(run.answers_path(m), sorted(rows, key=_row_order))
        for f in files:
            f.unlink(missing_ok=True)
    try:
        parts.rmdir()
    except OSError:  # parts of models not in this config stay
        pass


def run_meter(cfg: EvalConfig, host: AdapterHost, *, cache_dir: Path | None = None) -> dict:
    """The effect meter for the models of `cfg` on one loaded base model with its adapters:
    `meter.meter_models` (base, base + system prompt, then every adapter of `cfg.models`;
    the prefilled read-out too) with the eval's labels, kinds, adapter ids and steps on its
    rows, plus the `settings` it was computed with."""
    b = cfg.behavior
    probe = probe_config(cfg.meter_questions) if probe_applies(b) else False
    # k responses per condition spread over the held-out prompts (the first k of them when
    # k is smaller than their number; from 8 on the same reference set as `lls meter --k`)
    llr = LLRConfig(prompts=tuple(LLR_PROMPTS[:cfg.meter_k]), k=cfg.meter_k,
                    max_new_tokens=cfg.meter_max_new_tokens, seed=cfg.seed)
    adapters = [m for m in cfg.models if m.path]

    def stop_if_cancelled(done, total):
        if done < total and jobs.cancel_requested():
            raise _Cancelled()

    res = meter_models(cfg.model, b, [m.path for m in adapters], probe=probe, llr=llr,
                       labels=[m.label for m in adapters], cache_dir=cache_dir, host=host,
                       progress=stop_if_cancelled,
                       prefill=prefill_config(b, cfg.meter_questions, cfg.meter_prefill, cfg.seed),
                       teacher=cfg.teacher)
    label = {m.kind: m.label for m in cfg.models if m.kind in ("base", "system")}
    for row in res["models"][:2]:
        row.update(label=label.get(row["kind"], row["label"]), adapter_id=None, step=None)
    for row, m in zip(res["models"][2:], adapters):
        row.update(kind=m.kind, adapter_id=m.adapter_id, step=m.step)
    return {"settings": meter_settings(cfg), **res}


class _Cancelled(Exception):
    pass


def _make_judge(cfg: EvalConfig, host: AdapterHost, judge_model) -> Judge:
    if judge_model is not None:
        return Judge(cfg.judge, *judge_model)
    if cfg.judge.model == cfg.model:  # reuse the loaded base weights (adapters disabled)
        return Judge(cfg.judge, host.model, host.tokenizer)
    return Judge(cfg.judge)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_bytes(path, data.encode("utf-8"))


def eval_command(cfg: EvalConfig, cache_dir: Path | None = None,
                 num_processes: int = 1) -> list[str]:
    """The argv that runs `cfg` headless (what a background eval job runs); with
    `num_processes > 1` as an `accelerate launch` of that many data-parallel processes
    (CPU processes through accelerate's torchrun launcher when the model runs on the CPU)."""
    import torch

    cpu = str(cfg.model.device or "").startswith("cpu") or not torch.cuda.is_available()
    if num_processes > 1 and cfg.model.device and not cpu:
        # one device per process: accelerate assigns them (cuda:<local rank>)
        cfg = replace(cfg, model=replace(cfg.model, device=None))
    argv = [sys.executable, "-m", "lls"]
    if cache_dir:
        argv += ["--cache", str(cache_dir)]
    argv += ["eval", "--config", json.dumps(cfg.to_dict())]
    return launch_argv(argv, num_processes, cpu=cpu)


def submit_eval(cfg: EvalConfig, cache_dir: Path | None = None, title: str = "",
                num_processes: int = 1):
    """Start `cfg` as a background job (kind "eval"); returns the lls.jobs.Job.
    `num_processes > 1` runs it under `accelerate launch` (see `eval_command`)."""
    key = eval_key(cfg)
    labels = ", ".join(m.label for m in cfg.models)
    procs = f" · {num_processes} processes" if num_processes > 1 else ""
    return jobs.submit(eval_command(cfg, cache_dir, num_processes), kind="eval", key=key,
                       title=title or f"eval {cfg.behavior.label()}: {labels}{procs}",
                       device=(cfg.model.device or "cpu"),
                       params={"key": key, "answers": len(cfg.prompts) * cfg.samples
                               * len(cfg.models), "processes": num_processes})


def start_eval(cfg: EvalConfig, cache_dir: Path | None = None, num_processes: int = 1):
    """The cached EvalRun when `cfg` is already evaluated (nothing to run), else the started
    background job (`submit_eval`)."""
    found = find_eval(cfg, cache_dir)
    if found is not None and found.is_current(cfg):
        return found
    return submit_eval(cfg, cache_dir, num_processes=num_processes)


def adapter_models(info, *, kind: str | None = None,
                   checkpoints: bool = True) -> list[EvalModel]:
    """EvalModels for a trained adapter (lls.training AdapterInfo): its checkpoints + final.

    `kind` None: "random" for an adapter trained on a random-baseline selection (its labels
    say so), else "adapter"."""
    if kind is None:
        random = (info.manifest.get("selection") or {}).get("kind") == "random"
        kind = "random" if random else "adapter"
    tag = " (random baseline)" if kind == "random" else ""
    out = []
    if checkpoints:
        for step, path in info.checkpoints():
            out.append(EvalModel(kind, f"{info.id} · step {step}{tag}", str(path), info.id,
                                 step))
    final = getattr(info, "final_path", None)
    if final and Path(final).is_dir():
        out.append(EvalModel(kind, f"{info.id} · final{tag}", str(final), info.id, None))
    return out


def cluster_command(cfg: EvalConfig) -> str:
    """The shell command that runs `cfg` as N data-parallel processes elsewhere (e.g. on a GPU
    cluster; N left for the user to fill in): sync its `cache/` back to see the results."""
    return shlex.join(["accelerate", "launch", "--num_processes", "N", "-m", "lls", "eval",
                       "--config", json.dumps(cfg.to_dict(), ensure_ascii=False)])


__all__ = ["answer_score", "quick_eval", "EvalConfig", "EvalModel", "EvalRun", "evaluate",
           "eval_key", "open_eval", "list_evals", "find_eval", "submit_eval", "start_eval",
           "eval_command",
           "cluster_command", "summarize", "adapter_models", "meter_settings", "run_meter"]
