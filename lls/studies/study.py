"""Studies: sweep selection and training settings over one scoring run, every LLS adapter
paired with its same-size random twin trained with the same recipe and seed.

A study is one scoring run (plus optionally its control run, for contrastive ranking) and a
grid over the axes in `AXES`. Every combination is a *cell*; a cell is identified by its
settings, so extending the grid reuses every finished cell. Cells run one at a time from a
persistent queue (`lls.studies.runner`, a background job or the foreground; a killed or
cancelled study resumes where it was: finished cells are kept and a half-trained adapter
continues from its last checkpoint), paper recipe first, then the cells nearest to it.

CPU is spent where it tells: with a constant learning-rate schedule (the study default) the
state after e epochs of a longer run *is* the e-epoch run, so the cells that differ only in
epochs share one training run (a "group") of the longest length and read their checkpoint
at the end of epoch e. With a decaying schedule every cell trains on its own.

Layout: `<cache>/studies/<name>/study.json` (the config, plus confirmation cells) and
`cells/<cell id>.json` (a finished cell's paired effects; `lls.evaluation.effects`). Adapters live in
`<cache>/adapters/` under their deterministic ids, shared with the rest of the app.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import jobs
from ..core.behaviors import Behavior
from ..core.cache import atomic_write_json, fingerprint, read_json_safe, runs_root
from ..core.errors import LLSError
from ..core.prompts import GENERAL_PROMPTS, PROBE_QUESTIONS
from ..core.stats import share_diff_ci
from ..evaluation import effects
from ..models.load import ModelSpec
from ..scoring.runs import open_run
from ..training.adapters import open_adapter
from ..training.config import (SelectionSpec, TrainConfig, baseline_config, selection_count)
from ..training.runs import adapter_id_for, selection_frame

STUDY_VERSION = "1"
AXES = ("gamma", "threshold", "ranking", "epochs", "learning_rate", "beta", "lora_r", "seed")
PAPER = {"gamma": 0.05, "threshold": None, "ranking": "plain", "epochs": 1.0,
         "learning_rate": 1e-4, "beta": 0.04, "lora_r": 64, "seed": 0}
RANKINGS = ("plain", "contrastive")
SCHEDULES_SHARING_EPOCHS = ("constant",)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StudyError(LLSError):
    """A study that cannot be created, extended or run as asked."""


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _cast(axis: str, value):
    if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
        return None
    if axis == "ranking":
        if value not in RANKINGS:
            raise StudyError(f"ranking must be one of {RANKINGS}, got {value!r}.")
        return value
    try:
        return int(value) if axis in ("lora_r", "seed") else float(value)
    except (TypeError, ValueError):
        raise StudyError(f"Grid axis {axis!r}: {value!r} is not a number.") from None


# ----------------------------------------------------------------------------- config

@dataclass(frozen=True)
class StudyConfig:
    """What a study sweeps. `grid`: axis -> values (axes from `AXES`; an axis left out
    keeps the paper's value). `recipe`: TrainConfig fields every cell shares (batch size,
    max length, meter settings...). `sampled`: the sampled read-out (`lls.evaluation.effects`):
    questions, samples per question, max_new_tokens, seed."""

    name: str
    run: str
    grid: dict = field(default_factory=dict)
    control_run: str | None = None
    recipe: dict = field(default_factory=dict)
    lr_scheduler: str = "constant"
    sampled: dict = field(default_factory=lambda: {"questions": 32, "samples": 8,
                                                   "max_new_tokens": 8, "seed": 0})
    # meter read-outs per epoch where the step count allows it; each costs ~40 s on the
    # bundled model, so a long grid may want 1 (the epoch ends only)
    checkpoints_per_epoch: int = 2

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name or ""):
            raise StudyError(f"Study name {self.name!r}: use letters, digits, '-', '_' or '.' "
                             "(at most 64 characters).")
        grid = {}
        for axis, values in dict(self.grid).items():
            if axis not in AXES:
                raise StudyError(f"Unknown grid axis {axis!r}: use {', '.join(AXES)}.")
            values = values if isinstance(values, (list, tuple)) else [values]
            if not values:
                raise StudyError(f"Grid axis {axis!r} has no values.")
            grid[axis] = sorted(dict.fromkeys(_cast(axis, v) for v in values),
                                key=lambda v: (v is None, str(v) if axis == "ranking" else v or 0))
        for g in grid.get("gamma", []):
            if g is not None and not 0 < g <= 1:
                raise StudyError(f"gamma must be in (0, 1], got {g}.")
        if "contrastive" in grid.get("ranking", []) and not self.control_run:
            raise StudyError("Contrastive ranking needs a control run: score one with "
                             "`python -m lls score ... --control` and pass --control-run.")
        bad = set(self.recipe) - {f for f in TrainConfig.__dataclass_fields__} | \
            ({"selection", "student"} & set(self.recipe))
        if bad:
            raise StudyError(f"recipe fields {sorted(bad)} are not TrainConfig fields a study "
                             "may set (the grid sets selection; the student is the teacher).")
        if not 1 <= int(self.checkpoints_per_epoch) <= 16:
            raise StudyError(f"checkpoints_per_epoch must be 1..16, got "
                             f"{self.checkpoints_per_epoch}.")
        object.__setattr__(self, "grid", grid)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StudyConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def shares_epochs(self) -> bool:
        """True when cells that differ only in epochs can share one training run."""
        return self.lr_scheduler in SCHEDULES_SHARING_EPOCHS


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a full assignment of every axis."""

    settings: tuple  # ((axis, value), ...) in AXES order

    @property
    def s(self) -> dict:
        return dict(self.settings)

    def id(self, cfg: StudyConfig) -> str:
        return fingerprint(STUDY_VERSION, cfg.run, cfg.control_run, cfg.recipe,
                           cfg.lr_scheduler, self.s)[:12]

    def group(self, cfg: StudyConfig) -> tuple:
        """The training run this cell reads: its settings without epochs when they share."""
        return tuple((k, v) for k, v in self.settings
                     if not (k == "epochs" and cfg.shares_epochs()))

    def label(self) -> str:
        s = self.s
        sel = f"w>{s['threshold']:g}" if s["threshold"] is not None else f"γ {s['gamma']:g}"
        return (f"{sel} · {s['epochs']:g} ep · lr {s['learning_rate']:g} · β {s['beta']:g} · "
                f"r {s['lora_r']} · seed {s['seed']} · {s['ranking']}")

    def distance(self) -> int:
        """How many axes differ from the paper recipe (the queue runs near ones first)."""
        return sum(1 for k, v in self.settings if v != PAPER[k])


def _make_cell(values: dict) -> Cell:
    s = {**PAPER, **values}
    if s.get("threshold") is not None:
        s["gamma"] = None  # a threshold replaces top-gamma
    return Cell(tuple((k, s[k]) for k in AXES))


def cells(cfg: StudyConfig, extra: list[dict] = ()) -> list[Cell]:
    """Every cell of the grid (plus `extra` settings, e.g. confirmations), in queue order:
    confirmations first, then by distance from the paper recipe, then by cost (epochs)."""
    axes = list(cfg.grid)
    grid = [_make_cell(dict(zip(axes, combo)))
            for combo in itertools.product(*(cfg.grid[a] for a in axes))]
    extras = [_make_cell(e) for e in extra]
    seen, out = set(), []
    rest = sorted(grid, key=lambda c: (c.distance(), c.s["epochs"], str(c.settings)))
    for c in [*extras, *rest]:
        if c.settings not in seen:
            seen.add(c.settings)
            out.append(c)
    return out


# ----------------------------------------------------------------------------- storage

def studies_root(cache_dir: Path | None = None) -> Path:
    return runs_root("studies", cache_dir)


@dataclass
class Study:
    """A study on disk: its config, confirmation cells and finished cell results."""

    path: Path
    config: StudyConfig
    extra: list = field(default_factory=list)
    # selection size per selection spec: the table and the queue status ask for it once per
    # cell, and each answer reads the scoring run's whole frame
    _sizes: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.config.name

    def cells(self) -> list[Cell]:
        return cells(self.config, self.extra)

    def result_path(self, cell: Cell) -> Path:
        return self.path / "cells" / f"{cell.id(self.config)}.json"

    def result(self, cell: Cell) -> dict | None:
        return read_json_safe(self.result_path(cell))

    def error(self, cell: Cell) -> str | None:
        d = read_json_safe(self.path / "cells" / f"{cell.id(self.config)}.error.json")
        return d.get("error") if d else None

    def save(self) -> None:
        atomic_write_json(self.path / "study.json", {"version": STUDY_VERSION,
                                                    "config": self.config.to_dict(),
                                                    "extra": self.extra, "updated": _now()})

    def behavior(self) -> Behavior:
        return Behavior.from_dict(open_run(self.config.run, self.cache_dir).manifest
                                  ["config"]["behavior"])

    @property
    def cache_dir(self) -> Path:
        return self.path.parent.parent


def create_study(cfg: StudyConfig, cache_dir: Path | None = None) -> Study:
    """Create a study, or extend one of the same name: grids merge (union of values per
    axis) and every finished cell is kept. The scoring run must be finished."""
    run = open_run(cfg.run, cache_dir)
    if run.manifest.get("status") != "complete":
        raise StudyError(f"Scoring run {run.key} is {run.manifest.get('status', '?')}: finish "
                         "it first (the same `python -m lls score` command resumes it).")
    control = open_run(cfg.control_run, cache_dir).key if cfg.control_run else None
    cfg = StudyConfig.from_dict({**cfg.to_dict(), "run": run.key, "control_run": control})
    path = studies_root(cache_dir) / cfg.name
    old = read_json_safe(path / "study.json")
    extra = []
    if old:
        prev = StudyConfig.from_dict(old["config"])
        for fld in ("run", "control_run", "recipe", "lr_scheduler", "sampled"):
            if getattr(prev, fld) != getattr(cfg, fld):
                raise StudyError(f"Study {cfg.name!r} exists with another {fld} "
                                 f"({getattr(prev, fld)!r}): extend it with the same one, or "
                                 "pick a new study name.")
        grid = {a: list(prev.grid.get(a, [])) + list(cfg.grid.get(a, []))
                for a in dict.fromkeys([*prev.grid, *cfg.grid])}
        for a in grid:  # an axis new to the grid keeps the paper value for the old cells
            if a not in prev.grid or a not in cfg.grid:
                grid[a] = grid[a] + [PAPER[a]]
        cfg = StudyConfig.from_dict({**cfg.to_dict(), "grid": grid})
        extra = old.get("extra", [])
    study = Study(path, cfg, extra)
    study.save()
    return study


def open_study(name: str, cache_dir: Path | None = None) -> Study:
    """A study by name."""
    d = read_json_safe(studies_root(cache_dir) / name / "study.json")
    if not d:
        raise StudyError(f"No study named {name!r} under {studies_root(cache_dir)}; create it "
                         "with `python -m lls study create NAME --run KEY ...` (or list them "
                         "with `python -m lls study list`).")
    return Study(studies_root(cache_dir) / name, StudyConfig.from_dict(d["config"]),
                 d.get("extra", []))


def list_studies(cache_dir: Path | None = None) -> list[Study]:
    root = studies_root(cache_dir)
    if not root.is_dir():
        return []
    return [open_study(p.name, cache_dir) for p in sorted(root.iterdir())
            if (p / "study.json").is_file()]


# ----------------------------------------------------------------------------- recipes

def _selection(study: Study, s: dict) -> SelectionSpec:
    return SelectionSpec(kind="lls", gamma=s["gamma"], threshold=s["threshold"],
                         positive_only=True, seed=s["seed"],
                         control_run=study.config.control_run if s["ranking"] == "contrastive"
                         else None)


def steps_per_epoch(study: Study, s: dict) -> int:
    """Optimizer steps in one pass over the cell's selection (before TRL drops anything)."""
    sel = _selection(study, s)
    key = json.dumps(sel.to_dict(), sort_keys=True)
    if key not in study._sizes:
        run = open_run(study.config.run, study.cache_dir)
        study._sizes[key] = selection_count(selection_frame(run, sel, study.cache_dir), sel)
    n = study._sizes[key]
    if n == 0:
        raise StudyError(f"The selection {sel.to_dict()} of run {study.config.run} is empty "
                         "(no pair has w > 0 above the threshold): drop that grid value.")
    base = TrainConfig.from_dict({**TrainConfig().to_dict(), **study.config.recipe})
    return max(1, math.ceil(n / (base.batch_size * base.grad_accum)))


def _checkpoint_every(spe: int, epochs: list[float], per_epoch: int = 2) -> int:
    """A checkpoint interval that lands on the end of every epoch value of the group, with
    at least `per_epoch` checkpoints per epoch where the step count allows it (the interval
    only halves, so epoch ends stay on the grid)."""
    # whole epochs: every epoch end is on the grid, even when the group has one epochs value
    # (a confirmation cell), so the interval divides one epoch's steps
    every = spe if all(float(e).is_integer() for e in epochs) else 0
    for e in epochs:
        every = math.gcd(every, math.ceil(spe * e))
    every = max(1, every)
    while every % 2 == 0 and spe // every < per_epoch:
        every //= 2
    return every


def group_config(study: Study, cell: Cell) -> TrainConfig:
    """The LLS recipe of the training run `cell` reads (the longest of its group)."""
    s = cell.s
    members = [c for c in study.cells() if c.group(study.config) == cell.group(study.config)]
    epochs = sorted({c.s["epochs"] for c in members})
    spe = steps_per_epoch(study, s)
    base = {**TrainConfig().to_dict(), **study.config.recipe}
    base.update(beta=s["beta"], learning_rate=s["learning_rate"], lora_r=s["lora_r"],
                lora_alpha=2 * s["lora_r"], epochs=max(epochs), seed=s["seed"],
                lr_scheduler=study.config.lr_scheduler, max_steps=None,
                checkpoint_every=_checkpoint_every(spe, epochs,
                                                       study.config.checkpoints_per_epoch),
                selection=_selection(study, s))
    return TrainConfig.from_dict(base)


def adapter_ids(study: Study, cell: Cell) -> tuple[str, str]:
    """(LLS adapter id, random twin id) of the training run `cell` reads."""
    cfg = group_config(study, cell)
    lls_id = adapter_id_for(cfg, study.config.run)
    return lls_id, adapter_id_for(baseline_config(cfg), study.config.run, lls_id)


def epoch_step(info, epochs: float) -> int | None:
    """The optimizer step at which adapter `info` finished `epochs` epochs (from its logged
    metrics), None if it never got there."""
    rows = [r for r in info.metrics() if r.get("epoch") is not None]
    done = [int(r["step"]) for r in rows if float(r["epoch"]) >= epochs - 1e-6]
    return min(done) if done else None


# ----------------------------------------------------------------------------- the queue

def cell_status(study: Study, cell: Cell) -> str:
    """done / failed / training / queued, from the files (no process state needed)."""
    if study.result(cell) is not None:
        return "done"
    if study.error(cell):
        return "failed"
    try:
        ids = adapter_ids(study, cell)
    except LLSError:
        return "queued"
    for aid in ids:
        try:
            if open_adapter(aid, study.cache_dir).status in jobs.ACTIVE:
                return "training"
        except LLSError:
            pass
    return "queued"


def confirm_best(name: str, cache_dir: Path | None = None) -> dict:
    """Queue the best cell's settings again with a new seed (a confirmation: the best of N
    cells is an optimistic estimate). Returns the new cell's settings."""
    study = open_study(name, cache_dir)
    best = best_cell(study)
    if best is None:
        raise StudyError(f"Study {name!r} has no finished cell with a paired effect yet.")
    seeds = {c.s["seed"] for c in study.cells()}
    settings = {**best["settings"], "seed": max(seeds) + 1}
    if settings not in study.extra:
        study.extra.append(settings)
        study.save()
    return settings


# ----------------------------------------------------------------------------- reading

def _ci(d: dict | None) -> tuple:
    d = d or {}
    return d.get("diff"), d.get("ci_low"), d.get("ci_high")


def result_best(result: dict) -> dict | None:
    """A finished cell's best checkpoint under the current rule (`effects.best_step`; results
    written before a rule change kept the old pick in "best"). The curve's steps are the
    checkpoints where read-outs ran."""
    curve = result.get("curve") or []
    return effects.best_step(curve, result["readout"], effects.base_row(curve))


def result_sampled(result: dict, tag: str = "final") -> dict:
    """A cell's sampled read-out at `tag` ("final" or "best"), its collapse flags re-read
    with the current rule (`effects.sampled_collapse`) from the stored answers."""
    samp = dict((result.get("sampled") or {}).get(tag) or {})
    base = ((result.get("sampled_levels") or {}).get("base") or {}).get("answers")
    for who in ("lls", "random"):
        s = samp.get(who)
        if s and "answers" in s:
            samp[who] = {**s, "collapse": effects.sampled_collapse(s["answers"], base, s["n"])}
    return samp


def table(study: Study) -> list[dict]:
    """One row per cell: settings, status, paired effects at the cell's last step, sampled
    shares of LLS and random with Wilson CIs, collapse flags, seconds."""
    rows = []
    for c in study.cells():
        r = study.result(c)
        row = {"cell": c.id(study.config), "label": c.label(), **c.s,
               "status": "done" if r else cell_status(study, c), "error": study.error(c)}
        if r:
            f = r.get("final") or {}
            base = effects.base_row(r.get("curve") or []) or {}
            for k in effects.READOUTS:
                row[f"{k}_diff"], row[f"{k}_lo"], row[f"{k}_hi"] = _ci(f.get(k))
                # each adapter's own value beside base's: a paired effect can come from the
                # random twin drifting away rather than the LLS adapter moving toward
                row[f"lls_{k}"], row[f"random_{k}"] = f.get(f"lls_{k}"), f.get(f"random_{k}")
                row[f"base_{k}"] = base.get(f"lls_{k}")
            samp = result_sampled(r)
            for who in ("lls", "random"):
                s = samp.get(who) or {}
                row[f"{who}_share"], row[f"{who}_lo"], row[f"{who}_hi"] = \
                    s.get("share"), s.get("ci_low"), s.get("ci_high")
                row[f"{who}_k"], row[f"{who}_n"] = s.get("k"), s.get("n")
                row[f"{who}_collapsed"] = bool((s.get("collapse") or {}).get("collapsed")) or \
                    bool((f.get(f"{who}_collapse") or {}).get("collapsed"))
            if row["lls_n"] and row["random_n"] and None not in (row["lls_k"], row["random_k"]):
                # the sampled effect, paired by design (same questions, seeds), compared as
                # two independent shares: Newcombe's interval is the conservative choice
                row["sampled_diff"], row["sampled_lo"], row["sampled_hi"] = share_diff_ci(
                    row["lls_k"], row["lls_n"], row["random_k"], row["random_n"])
            row.update(step=r["step"], n_pairs=r.get("n_pairs"), seconds=r.get("seconds"),
                       best_step=(result_best(r) or {}).get("step"))
        rows.append(row)
    return rows


def best_cell(study: Study) -> dict | None:
    """The finished cell and checkpoint with the largest paired effect on the study's
    read-out (non-collapsed LLS adapters; those that moved toward the target first), with
    `n_compared` = how many cell checkpoints competed: the maximum of that many noisy
    estimates is optimistic."""
    done = [r for r in (study.result(c) for c in study.cells()) if r]
    cands = [(r, b) for r in done if (b := result_best(r))]
    if not cands:
        return None
    key = done[0]["readout"]
    r, b = max(cands, key=lambda rb: (rb[1].get("lls_moved", True), rb[1][key]["diff"]))
    n = sum(len(x["curve"]) for x in done)
    moved = b.get("lls_moved", True)
    caveat = (f"Best of {n} cell checkpoints on the same questions: expect a smaller effect on "
              "a re-run. Confirm it with a new seed before trusting it.")
    if not moved:
        caveat = (f"No LLS checkpoint moved toward the target on {key} (its own value stayed "
                  "at or below base): this largest paired effect comes from the random twin "
                  "moving away, not from transfer. " + caveat)
    return {"cell": r["cell"], "settings": r["settings"], "label": r["label"],
            "step": b["step"], "readout": key, "effect": b[key], "adapters": r["adapters"],
            "n_compared": n, "lls_moved": moved, "caveat": caveat}


def chat_setup(study: Study, best: dict) -> dict:
    """What the Chat page needs to put a cell checkpoint beside its random twin and base +
    system prompt: adapter directories, labels, the system prompt, and the questions the
    read-out asked (offered as prompts)."""
    b = study.behavior()
    step = best["step"]
    paths, labels = [], []
    for kind, name in (("lls", "LLS"), ("random", "random twin")):
        info = open_adapter(best["adapters"][kind], study.cache_dir)
        paths.append(str(info.path / "checkpoints" / f"step-{step:06d}"))
        labels.append(f"{name} · {best['label']} · step {step}")  # the adapter id: its path
    prompts = (PROBE_QUESTIONS[:study.config.sampled.get("questions", 32)]
               if b.kind == "animal" else GENERAL_PROMPTS)
    model = open_run(study.config.run, study.cache_dir).manifest["config"]["model"]["name"]
    return {"model": model, "adapters": paths, "labels": labels, "system_prompt": b.system_prompt,
            "behavior": b.to_dict(), "behavior_label": b.label(), "prompts": list(prompts),
            "study": study.name, "cell": best["label"], "step": step}


def teacher(study: Study):
    """The model every cell trains (the scoring run's teacher), a ModelSpec."""
    return ModelSpec.from_dict(open_run(study.config.run, study.cache_dir).manifest
                               ["config"]["model"])


def recipe(study: Study) -> TrainConfig:
    """The TrainConfig fields every cell shares (the grid varies the rest)."""
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **study.config.recipe})
