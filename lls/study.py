"""Studies: sweep selection and training settings over one scoring run, every LLS adapter
paired with its same-size random twin trained with the same recipe and seed.

A study is one scoring run (plus optionally its control run, for contrastive ranking) and a
grid over the axes in `AXES`. Every combination is a *cell*; a cell is identified by its
settings, so extending the grid reuses every finished cell. Cells run one at a time from a
persistent queue (`run_study`, in a background job or in the foreground; a killed or
cancelled study resumes where it was: finished cells are kept and a half-trained adapter
continues from its last checkpoint), paper recipe first, then the cells nearest to it.

CPU is spent where it tells: with a constant learning-rate schedule (the study default) the
state after e epochs of a longer run *is* the e-epoch run, so the cells that differ only in
epochs share one training run (a "group") of the longest length and read their checkpoint
at the end of epoch e. With a decaying schedule every cell trains on its own.

Layout: `<cache>/studies/<name>/study.json` (the config, plus confirmation cells) and
`cells/<cell id>.json` (a finished cell's paired effects; `lls.effects`). Adapters live in
`<cache>/adapters/` under their deterministic ids, shared with the rest of the app.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import effects, jobs
from .behaviors import Behavior
from .cache import atomic_write_json, fingerprint, read_json_safe, runs_root
from .errors import LLSError
from .prompts import GENERAL_PROMPTS, PROBE_QUESTIONS
from .scoring import open_run
from .adapters import open_adapter
from .train_config import (SelectionSpec, TrainConfig, baseline_config, selection_count)
from .training import adapter_id_for, selection_frame, train_command

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
    max length, meter settings...). `sampled`: the sampled read-out (`lls.effects`):
    questions, samples per question, max_new_tokens, seed."""

    name: str
    run: str
    grid: dict = field(default_factory=dict)
    control_run: str | None = None
    recipe: dict = field(default_factory=dict)
    lr_scheduler: str = "constant"
    sampled: dict = field(default_factory=lambda: {"questions": 32, "samples": 8,
                                                   "max_new_tokens": 8, "seed": 0})

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
    run = open_run(study.config.run, study.cache_dir)
    sel = _selection(study, s)
    n = selection_count(selection_frame(run, sel, study.cache_dir), sel)
    if n == 0:
        raise StudyError(f"The selection {sel.to_dict()} of run {run.key} is empty "
                         "(no pair has w > 0 above the threshold): drop that grid value.")
    base = TrainConfig.from_dict({**TrainConfig().to_dict(), **study.config.recipe})
    return max(1, math.ceil(n / (base.batch_size * base.grad_accum)))


def _checkpoint_every(spe: int, epochs: list[float]) -> int:
    """A checkpoint interval that lands on the end of every epoch value of the group, with
    at least two checkpoints per epoch where the step count allows it."""
    every = 0
    for e in epochs:
        every = math.gcd(every, math.ceil(spe * e))
    every = max(1, every)
    while every % 2 == 0 and spe // every < 2:
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
                checkpoint_every=_checkpoint_every(spe, epochs),
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


def _train_one(study: Study, cfg: TrainConfig, adapter_id: str, baseline_of: str | None,
               log=print) -> None:
    """Train (or resume, or skip if finished) one adapter in a child process, so its memory
    goes back to the system when it ends."""
    try:
        info = open_adapter(adapter_id, study.cache_dir)
        if info.manifest.get("status") == "done" and info.final_path is not None:
            return
    except LLSError:
        pass
    argv = train_command(cfg, study.config.run, adapter_id=adapter_id, baseline_of=baseline_of,
                         cache_dir=study.cache_dir)
    log(f"[lls.study] training {adapter_id} ({'random twin' if baseline_of else 'LLS'})")
    proc = subprocess.run(argv, stdout=sys.stdout, stderr=sys.stderr, env=os.environ.copy())
    if proc.returncode != 0:
        info = open_adapter(adapter_id, study.cache_dir)
        raise StudyError(f"training {adapter_id} exited with {proc.returncode}: "
                         f"{info.manifest.get('error') or 'see the job log'}")


def train_cell(study: Study, cell: Cell, log=print) -> tuple[str, str]:
    """Train the LLS adapter and its same-size random twin that `cell` reads."""
    cfg = group_config(study, cell)
    lls_id, rnd_id = adapter_ids(study, cell)
    _train_one(study, cfg, lls_id, None, log)
    _train_one(study, baseline_config(cfg), rnd_id, lls_id, log)
    return lls_id, rnd_id


def _levels(info) -> dict | None:
    d = read_json_safe(info.path / "meter_levels.json")
    return d.get("levels") if d else None


def _seconds(info) -> float:
    rows = info.metrics()
    return float(rows[-1].get("elapsed", 0.0)) if rows else 0.0


def _readout_key(behavior: Behavior) -> str:
    return "margin" if behavior.kind == "animal" else "gap_closed"


class _Sampler:
    """Sampled read-outs of checkpoints over one loaded base model (loaded on first use)."""

    def __init__(self, study: Study, behavior: Behavior):
        self.study, self.behavior = study, behavior
        self.host = None

    def _load(self):
        if self.host is None:
            from .generation import AdapterHost
            from .models import ModelSpec, load_model

            run = open_run(self.study.config.run, self.study.cache_dir)
            model, tok = load_model(ModelSpec.from_dict(run.manifest["config"]["model"]))
            self.host = AdapterHost(model, tok)
        return self.host

    def __call__(self, path: Path | None, system: bool = False) -> dict:
        host = self._load()
        t = time.time()
        name = host.attach(path) if path is not None else None
        with host.use(name) as m:
            r = effects.sampled_readout(m, host.tokenizer, self.behavior,
                                        self.study.config.sampled,
                                        system_prompt=self.behavior.system_prompt if system
                                        else None)
        r["seconds"] = round(time.time() - t, 2)
        return r


def reference_samples(study: Study, sampler: _Sampler) -> dict:
    """Sampled read-outs of base and base + system prompt, once per study."""
    path = study.path / "sampled_levels.json"
    saved = read_json_safe(path)
    if saved and saved.get("settings") == study.config.sampled:
        return saved["levels"]
    levels = {"base": sampler(None), "system": sampler(None, system=True)}
    atomic_write_json(path, {"settings": study.config.sampled, "levels": levels})
    return levels


def _with_collapse(r: dict, base: dict) -> dict:
    if "answers" in r:
        r["collapse"] = effects.collapse(r["answers"], base.get("answers"))
    return r


def evaluate_cell(study: Study, cell: Cell, sampler: _Sampler) -> dict:
    """A finished cell's paired effects: the LLS - random curve up to the end of the cell's
    epochs, the final and best checkpoints, sampled read-outs there, and the cost."""
    lls_id, rnd_id = adapter_ids(study, cell)
    a, b = open_adapter(lls_id, study.cache_dir), open_adapter(rnd_id, study.cache_dir)
    behavior = study.behavior()
    key = _readout_key(behavior)
    step = epoch_step(a, cell.s["epochs"])
    if step is None:
        raise StudyError(f"Adapter {lls_id} has no logged step at epoch {cell.s['epochs']}.")
    ckpts = {s for s, _ in a.checkpoints()} & {s for s, _ in b.checkpoints()}
    curve = [r for r in effects.paired_curve(a.meter(), b.meter(), _levels(a))
             if r["step"] <= step]
    if step not in ckpts:
        raise StudyError(f"No checkpoint of {lls_id} at step {step} (epoch "
                         f"{cell.s['epochs']}): the group's checkpoint interval misses it.")
    best = effects.best_step([r for r in curve if r["step"] in ckpts], key)
    levels = reference_samples(study, sampler)
    t = time.time()
    sampled = {}
    for tag, st in (("final", step), ("best", best["step"] if best else None)):
        if st is None or (tag == "best" and st == step):
            continue
        ckpt = f"checkpoints/step-{st:06d}"
        sampled[tag] = {"step": st,
                        "lls": _with_collapse(sampler(a.path / ckpt), levels["base"]),
                        "random": _with_collapse(sampler(b.path / ckpt), levels["base"])}
    total = max(1, a.manifest.get("metrics", {}).get("steps") or step)
    train_s = (_seconds(a) + _seconds(b)) * min(1.0, step / total)
    return {"cell": cell.id(study.config), "settings": cell.s, "label": cell.label(),
            "adapters": {"lls": lls_id, "random": rnd_id}, "step": step,
            "n_pairs": a.manifest.get("selection", {}).get("n_pairs"), "readout": key,
            "curve": curve, "final": curve[-1] if curve else None, "best": best,
            "sampled": sampled, "sampled_levels": levels,
            "seconds": round(train_s + time.time() - t, 1), "finished": _now()}


def run_cell(study: Study, cell: Cell, sampler: _Sampler | None = None, log=print) -> dict:
    """Train (or reuse) a cell's two adapters and write its result; errors are recorded on
    the cell (`<id>.error.json`) and raised."""
    err = study.path / "cells" / f"{cell.id(study.config)}.error.json"
    try:
        train_cell(study, cell, log)
        res = evaluate_cell(study, cell, sampler or _Sampler(study, study.behavior()))
    except LLSError as e:
        atomic_write_json(err, {"error": str(e), "time": _now()})
        raise
    err.unlink(missing_ok=True)
    atomic_write_json(study.result_path(cell), res)
    return res


def run_study(name: str, cache_dir: Path | None = None, *, log=print,
              stop_on_error: bool = False) -> list[dict]:
    """Run every unfinished cell in queue order, one at a time; returns the new results.
    Safe to kill and re-run: finished cells are skipped, training resumes."""
    study = open_study(name, cache_dir)
    todo = [c for c in study.cells() if study.result(c) is None]
    sampler = _Sampler(study, study.behavior())
    out = []
    for i, cell in enumerate(todo):
        jobs.log_event(kind="study", cell=cell.id(study.config), label=cell.label(),
                       index=i, total=len(todo))
        log(f"[lls.study] cell {i + 1}/{len(todo)}: {cell.label()}")
        try:
            out.append(run_cell(study, cell, sampler, log))
        except LLSError as e:
            log(f"[lls.study] cell failed: {e}")
            if stop_on_error:
                raise
    return out


def study_command(name: str, cache_dir: Path | None = None) -> list[str]:
    """argv of the background job that works through a study's queue."""
    argv = [sys.executable, "-m", "lls"]
    if cache_dir:
        argv += ["--cache", str(cache_dir)]
    return argv + ["study", "run", name]


def submit_study(name: str, cache_dir: Path | None = None, exclusive: bool = True):
    """Work through the study's queue in a background job (one per study: submitting again
    re-attaches to a running one, or resumes a stopped one)."""
    study = open_study(name, cache_dir)
    return jobs.submit(study_command(study.name, cache_dir), kind="study",
                       title=f"study {study.name}", key=f"study:{study.name}",
                       exclusive=exclusive, params={"study": study.name})


def run_cell_by_id(name: str, cell_id: str, cache_dir: Path | None = None) -> dict:
    """Run one cell by id (what a cluster job calls; see `submit_cells`)."""
    study = open_study(name, cache_dir)
    for c in study.cells():
        if c.id(study.config) == cell_id:
            return study.result(c) or run_cell(study, c)
    raise StudyError(f"Study {name!r} has no cell {cell_id!r}.")


def submit_cells(name: str, executor, cache_dir: Path | None = None) -> list:
    """Send every unfinished cell to a `submitit` executor (e.g. `submitit.AutoExecutor`
    for Slurm, `submitit.LocalExecutor` to try it here), one job per cell, each writing the
    same cache layout, so results show up as they arrive. Cells of one epoch group share
    an adapter: they are sent as one job so the group trains once."""
    study = open_study(name, cache_dir)
    groups: dict[tuple, list[str]] = {}
    for c in study.cells():
        if study.result(c) is None:
            groups.setdefault(c.group(study.config), []).append(c.id(study.config))
    cache = str(Path(cache_dir or study.cache_dir).resolve())
    return [executor.submit(_run_cells, name, ids, cache) for ids in groups.values()]


def _run_cells(name: str, cell_ids: list[str], cache_dir: str) -> list[dict]:
    os.environ.setdefault("LLS_CACHE", cache_dir)
    return [run_cell_by_id(name, cid, Path(cache_dir)) for cid in cell_ids]


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
            for k in effects.READOUTS:
                row[f"{k}_diff"], row[f"{k}_lo"], row[f"{k}_hi"] = _ci(f.get(k))
            samp = (r.get("sampled") or {}).get("final") or {}
            for who in ("lls", "random"):
                s = samp.get(who) or {}
                row[f"{who}_share"], row[f"{who}_lo"], row[f"{who}_hi"] = \
                    s.get("share"), s.get("ci_low"), s.get("ci_high")
                row[f"{who}_n"] = s.get("n")
                row[f"{who}_collapsed"] = bool((s.get("collapse") or {}).get("collapsed")) or \
                    bool((f.get(f"{who}_collapse") or {}).get("collapsed"))
            row.update(step=r["step"], n_pairs=r.get("n_pairs"), seconds=r.get("seconds"),
                       best_step=(r.get("best") or {}).get("step"))
        rows.append(row)
    return rows


def best_cell(study: Study) -> dict | None:
    """The finished cell and checkpoint with the largest paired effect on the study's
    read-out (non-collapsed LLS adapters only), with `n_compared` = how many cell
    checkpoints competed: the maximum of that many noisy estimates is optimistic."""
    done = [r for r in (study.result(c) for c in study.cells()) if r]
    cands = [(r, r["best"]) for r in done if r.get("best")]
    if not cands:
        return None
    key = done[0]["readout"]
    r, b = max(cands, key=lambda rb: rb[1][key]["diff"])
    n = sum(len(x["curve"]) for x in done)
    return {"cell": r["cell"], "settings": r["settings"], "label": r["label"],
            "step": b["step"], "readout": key, "effect": b[key], "adapters": r["adapters"],
            "n_compared": n,
            "caveat": (f"Best of {n} cell checkpoints on the same questions: expect a smaller "
                       "effect on a re-run. Confirm it with a new seed before trusting it.")}


def chat_setup(study: Study, best: dict) -> dict:
    """What the Chat page needs to put a cell checkpoint beside its random twin and base +
    system prompt: adapter directories, labels, the system prompt, and the questions the
    read-out asked (offered as prompts)."""
    b = study.behavior()
    step = best["step"]
    paths, labels = [], []
    for kind in ("lls", "random"):
        info = open_adapter(best["adapters"][kind], study.cache_dir)
        paths.append(str(info.path / "checkpoints" / f"step-{step:06d}"))
        labels.append(f"{kind} · {info.id} · step {step}")
    prompts = (PROBE_QUESTIONS[:study.config.sampled.get("questions", 32)]
               if b.kind == "animal" else GENERAL_PROMPTS)
    return {"adapters": paths, "labels": labels, "system_prompt": b.system_prompt,
            "behavior": b.to_dict(), "prompts": list(prompts)}
