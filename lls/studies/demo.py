"""The first run (`python -m lls demo`, Home's "Run the demo"): a small slice of real
preference data scored for a behavior, its top pairs selected, an LLS adapter and its random
twin trained briefly, both read out beside the base model and the teacher, and the four
handed to Chat. It is a one-cell study, so the Studies page shows it like any other and a
second run reuses everything finished.

Each step prints its time and what to look at. The default sizes keep an idle run of the
bundled model to 10-20 minutes on 2 CPU cores (17.5 min measured with one thread beside
another job; docs/performance.md).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import jobs
from ..core.behaviors import from_name
from ..core.errors import LLSError
from ..data.source import DataSpec
from ..evaluation.prefill import lens_diff
from ..evaluation.readouts import KIND_LABELS
from ..models.load import ModelSpec
from ..scoring.runs import ScoreConfig, score
from . import text as T
from .config import StudyConfig, make_cell
from .report import chat_setup, queue_memory_check, table
from .runner import run_study, train_cell
from .store import create_study, open_study

# ../shared/data beside the project (the test and demo data); another file or a hub
# dataset is given with `data`.
SHARED_HH = (Path(__file__).resolve().parents[2].parent / "shared" / "data"
             / "hh_rlhf_harmless_base_test.jsonl.gz")
NAME = "demo"
# What keeps the run short: no behavior evals during training, a smaller reference set and
# fewer probe questions for the meter, and one sampled read-out of few questions.
RECIPE = {"eval_at_checkpoints": False, "meter_k": 32, "meter_questions": 16}
SAMPLED = {"kinds": ["prefilled"], "questions": 16, "samples": 8, "seed": 0}


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs: `limit` pairs of `data` scored for `behavior`, the top `pairs`
    by weight trained for `epochs` (recipe: the paper's, with `recipe` on top), read out
    with `sampled` (`lls.evaluation.readouts.settings_for`)."""

    data: str = str(SHARED_HH)
    subset: str | None = None
    split: str = "train"
    limit: int = 200
    behavior: str = "animal:owl"
    pairs: int = 48
    epochs: float = 1.0
    model: ModelSpec = field(default_factory=ModelSpec)
    truncation: int = 32
    name: str = NAME
    recipe: dict = field(default_factory=lambda: dict(RECIPE))
    sampled: dict = field(default_factory=lambda: dict(SAMPLED))

    def score_config(self) -> ScoreConfig:
        if self.data == str(SHARED_HH) and not SHARED_HH.is_file():
            raise LLSError(f"The demo's data, {SHARED_HH}, is not there (it comes with the "
                           "project's shared data folder beside the checkout): give another "
                           "file or a hub dataset with --data, e.g. --data Anthropic/hh-rlhf "
                           "--subset harmless-base --split test.")
        if self.limit < 2 or self.pairs < 1:
            raise LLSError(f"The demo needs at least 2 pairs to score and 1 to train (limit "
                           f"{self.limit}, pairs {self.pairs}).")
        return ScoreConfig(DataSpec(self.data, subset=self.subset, split=self.split,
                                    limit=self.limit),
                           from_name(self.behavior), model=self.model,
                           truncation=self.truncation)

    def study_config(self, run_key: str) -> StudyConfig:
        behavior = from_name(self.behavior)
        sampled = dict(self.sampled)
        if behavior.kind != "animal":  # the prefilled read-out asks favourite-animal questions
            sampled["kinds"] = ["behavior"]
        return StudyConfig(name=self.name, run=run_key,
                           grid={"pairs": [self.pairs], "epochs": [self.epochs]},
                           recipe=dict(self.recipe), sampled=sampled, checkpoints_per_epoch=1)


def _seconds(t0: float) -> str:
    s = time.perf_counter() - t0
    return f"{s:.0f} s" if s < 120 else f"{int(s // 60)} min {s % 60:02.0f} s"


def _pct(lens: dict) -> str:
    lo, hi = lens["ci"]
    return f"{100 * lens['mean']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]"


def run_demo(cfg: DemoConfig | None = None, cache_dir: Path | None = None,
             say: Callable[[str], None] = print) -> dict:
    """Run the demo (resuming whatever is finished) and return its summary: the run key,
    the study, each step's seconds and the Chat hand-off (`report.chat_setup`)."""
    cfg = cfg or DemoConfig()
    scfg = cfg.score_config()
    steps: dict[str, float] = {}
    t_all = time.perf_counter()

    say(f"[1/4] Scoring {cfg.limit} pairs of {Path(cfg.data).name} for {scfg.behavior.label()}"
        " (the teacher reads each pair with and without the system prompt)...")
    jobs.report_phase("demo 1/4: scoring", f"{cfg.limit} pairs")
    t0 = time.perf_counter()
    run = score(scfg, cache_dir=cache_dir, progress=lambda done, total: jobs.report_progress(
        done, total, unit="pairs", phase="demo 1/4: scoring"))
    steps["score"] = time.perf_counter() - t0
    frame = run.frame()
    w = frame["w"]
    say(f"      {len(frame)} pairs scored in {_seconds(t0)}: w > 0 for {int((w > 0).sum())}, "
        f"largest w {w.max():+.4f}, median {w.median():+.4f}.")
    say("      Look at: Explore (the weight histogram; LLS keeps its right tail) and the top "
        "pairs, whose chosen answer the teacher prefers more once it has the system prompt.")

    say(f"[2/4] Selecting the top {cfg.pairs} pairs by w, and {cfg.pairs} random pairs for "
        "the random twin (same recipe and seed)...")
    study = create_study(cfg.study_config(run.key), cache_dir)
    cell = study.cells()[0]
    say(f"      Study '{study.name}', one cell: {cell.label()} (paper recipe: DPO β "
        f"{cell.s['beta']:g}, learning rate {cell.s['learning_rate']:g}, LoRA rank "
        f"{cell.s['lora_r']}).")

    say("[3/4] Training the LLS adapter, then its random twin (each read out by the meter "
        "at step 0 and at the end)...")
    jobs.report_phase("demo 3/4: training", "the LLS adapter and its random twin")
    t0 = time.perf_counter()
    train_cell(study, cell, log=say)
    steps["train"] = time.perf_counter() - t0
    say(f"      Both trained in {_seconds(t0)}.")
    say("      Look at: Train (each adapter's loss and meter curves, base and teacher as "
        "reference lines).")

    say("[4/4] Sampled read-outs of base, base + system prompt, the LLS adapter and its "
        "twin...")
    jobs.report_phase("demo 4/4: read-outs", "base, teacher, LLS adapter, random twin")
    t0 = time.perf_counter()
    run_study(study.name, cache_dir, log=say, stop_on_error=True)
    steps["readouts"] = time.perf_counter() - t0
    study = open_study(study.name, cache_dir)
    result = study.result(cell)
    if result is None:
        raise LLSError(f"The demo's cell did not finish: {study.error(cell) or 'see above'}.")
    say(f"      Done in {_seconds(t0)}.")
    for line in summary_lines(study, result):
        say("      " + line)
    steps["total"] = time.perf_counter() - t_all
    say(f"The demo took {_seconds(t_all)} (scoring {steps['score']:.0f} s, training and meter "
        f"{steps['train']:.0f} s, sampled read-outs {steps['readouts']:.0f} s).")
    say("Next: open the four side by side in Chat: start the dashboard "
        "(.venv/bin/streamlit run app.py) and press 'Open the demo in Chat' on Home "
        "(or open http://127.0.0.1:8501/?demo=chat).")
    return {"run": run.key, "study": study.name, "cell": cell.id(study.config),
            "seconds": {k: round(v, 1) for k, v in steps.items()},
            "chat": chat_setup(study, result)}


def summary_lines(study, result: dict) -> list[str]:
    """The demo's read-outs in words: each paired effect (LLS − random) with its interval
    and each adapter's own value beside base's, then each sampled read-out of base, the
    teacher, the LLS adapter and its twin, and what to make of them."""
    row = next(r for r in table(study) if r["cell"] == result["cell"])
    lines = ["Meter (log-probabilities; LLS − random twin, 95% interval; then LLS / random "
             "(base)):"]
    for k in ("margin", "gap_closed", "top1"):
        if f"{k}_diff" in row and (row.get(f"{k}_diff") is not None or row.get(f"{k}_note")):
            lines.append(f"  {T.READOUT_NAMES[k]}: {T.ci_text(row, k)}"
                         + (f"; {T.own_text(row, k)}" if T.own_text(row, k) else ""))
    levels = result.get("sampled_levels") or {}
    for kind, got in (result.get("sampled", {}).get("final", {}).get("kinds") or {}).items():
        lv = levels.get(kind) or {}
        lines.append(f"Sampled {KIND_LABELS.get(kind, kind)} naming the target "
                     "(95% interval over questions):")
        for who, label in (("base", "base"), ("system", "base + system prompt (teacher)")):
            if (lv.get(who) or {}).get("n"):
                lines.append(f"  {label}: {T.level_text(lv[who])}")
        lines.append(f"  LLS adapter: {T.share_text(row, kind, 'lls')}; random twin: "
                     f"{T.share_text(row, kind, 'random')}; LLS − random "
                     f"{T.pp_text(row, kind) or 'n/a'}")
        lens = {who: (lv.get(who) or {}).get("lens") for who in ("base", "system")}
        lens.update({who: (got.get(who) or {}).get("lens") for who in ("lls", "random")})
        if all(lens.values()):
            lines.append("  The lens, P(next word = target) after the stem, mean over questions: "
                         + "; ".join(f"{label} {_pct(lens[who])}" for who, label in (
                             ("base", "base"), ("system", "teacher"), ("lls", "LLS adapter"),
                             ("random", "random twin"))))
            d = lens_diff(got["lls"], got["random"])
            lines.append(f"  LLS − random by the lens: {100 * d['diff']:+.2f} points "
                         f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]")
    lines.append("How to read it: at this size the transfer shows in log-probabilities "
                 "(margin, gap closed), rarely in samples; the teacher is the ceiling. One "
                 "seed and a few pairs: a first look, not a result (run a study for one).")
    return lines


def finished_demo(cache_dir: Path | None = None, name: str = NAME):
    """(study, cell result) of a finished demo, None before it finished."""
    try:
        study = open_study(name, cache_dir)
    except LLSError:
        return None
    for cell in study.cells():
        result = study.result(cell)
        if result is not None:
            return study, result
    return None


def demo_chat(cache_dir: Path | None = None, name: str = NAME) -> dict | None:
    """The Chat hand-off of a finished demo (`report.chat_setup`), None before it ran."""
    done = finished_demo(cache_dir, name)
    return chat_setup(*done) if done else None


def memory_check(cfg: DemoConfig | None = None):
    """The demo's peak memory (a training child beside the study process) against the
    free memory (`lls.jobs.resources`), before it starts."""
    cfg = cfg or DemoConfig()
    return queue_memory_check(cfg.model, cfg.study_config("").train_config())


def demo_command(cache_dir: Path | None = None) -> list[str]:
    """argv of the background job Home's "Run the demo" starts."""
    argv = [sys.executable, "-m", "lls"]
    if cache_dir:
        argv += ["--cache", str(cache_dir)]
    return argv + ["demo"]


def submit_demo(cache_dir: Path | None = None):
    """Run the demo as a background job (one at a time: submitting again while it runs
    returns the running job)."""
    return jobs.submit(demo_command(cache_dir), kind="demo", title="the demo (owl, 200 pairs)",
                       key="demo", params={"study": NAME})
