"""A study on disk: `<cache>/studies/<name>/study.json` (version, config, confirmations),
`cells/<cell id>.json` (a finished cell's result), `cells/<cell id>.error.json`,
`sampled_levels.json` (base and base + system prompt, sampled once per study) and
`costs/<adapter id>.json` (seconds spent per training process, summed across resumes).

Studies written by an older `STUDY_VERSION` are upgraded when opened: the config is kept,
their cells get new ids, and running the queue re-reads them (the adapters are reused, so
nothing is trained again).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

from ..core.behaviors import Behavior
from ..core.cache import atomic_write_json, read_json_safe, runs_root
from ..evaluation.readouts import settings_for
from ..scoring.lifecycle import owner_alive
from ..scoring.contrastive import open_controls
from ..scoring.runs import open_run
from .config import PAPER, STUDY_VERSION, Cell, StudyConfig, StudyError, cells, full_recipe


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def studies_root(cache_dir: Path | None = None) -> Path:
    return runs_root("studies", cache_dir)


def checkpoint_dir(adapter_path: Path, step: int) -> Path:
    """Where an adapter's checkpoint at `step` is exported (the one spelling of it)."""
    return Path(adapter_path) / "checkpoints" / f"step-{int(step):06d}"


@dataclass
class Study:
    """A study on disk: its config, confirmation cells and finished cell results."""

    path: Path
    config: StudyConfig
    extra: list = field(default_factory=list)
    upgraded_from: str | None = None
    # selection sizes per selection spec: the table and the queue status ask once per
    # cell, and each answer reads the scoring run's whole frame
    _sizes: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def cache_dir(self) -> Path:
        return self.path.parent.parent

    def cells(self) -> list[Cell]:
        return cells(self.config, self.extra)

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells():
            if c.id(self.config) == cell_id:
                return c
        raise StudyError(f"Study {self.name!r} has no cell {cell_id!r}.")

    def result_path(self, cell: Cell) -> Path:
        return self.path / "cells" / f"{cell.id(self.config)}.json"

    def error_path(self, cell: Cell) -> Path:
        return self.path / "cells" / f"{cell.id(self.config)}.error.json"

    def result(self, cell: Cell) -> dict | None:
        return read_json_safe(self.result_path(cell))

    def error(self, cell: Cell) -> str | None:
        d = read_json_safe(self.error_path(cell))
        return d.get("error") if d else None

    def save(self) -> None:
        atomic_write_json(self.path / "study.json", {
            "version": STUDY_VERSION, "config": self.config.to_dict(), "extra": self.extra,
            "upgraded_from": self.upgraded_from, "updated": now()})

    def run_manifest(self, cell: Cell | None = None) -> dict:
        """The manifest of the study's scoring run, or of `cell`'s (its teacher's)."""
        key = cell.run(self.config) if cell is not None else self.config.run
        return open_run(key, self.cache_dir).manifest

    def behavior(self, cell: Cell | None = None) -> Behavior:
        """The behavior the study reads (a cell's: with its teacher's system prompt)."""
        return Behavior.from_dict(self.run_manifest(cell)["config"]["behavior"])

    def levels_path(self, run_key: str | None = None) -> Path:
        """Where the sampled base and teacher levels of a teacher's run are kept (the
        study's own run: `sampled_levels.json`)."""
        if not run_key or run_key == self.config.run:
            return self.path / "sampled_levels.json"
        return self.path / f"sampled_levels-{run_key[:16]}.json"

    def teacher_levels(self) -> list[tuple[str, dict]]:
        """(teacher name, sampled levels per kind) of every teacher whose levels are read."""
        out = []
        for key in self.teachers():
            lv = (read_json_safe(self.levels_path(key)) or {}).get("levels")
            if lv:
                out.append((self.config.teacher_names.get(key, "base + system prompt"), lv))
        return out

    def teachers(self) -> list[str]:
        """The scoring runs of the teacher axis, the study's own run first."""
        return list(dict.fromkeys([self.config.run, *(t for t in self.config.grid.get(
            "teacher", []) if t)]))

    def sampled_settings(self) -> dict:
        return self.config.sampled

    @property
    def running_path(self) -> Path:
        return self.path / "running.json"

    def running(self) -> dict | None:
        """The process working through the queue now (wherever it was started: the page's
        background job, `python -m lls study run`, a cluster job on this host): its owner,
        start time and current cell; None when none is alive."""
        d = read_json_safe(self.running_path)
        if d and owner_alive(d.get("owner")) is not False:
            return d
        return None


def _normalised(cfg: StudyConfig, behavior: Behavior, prev: StudyConfig | None) -> StudyConfig:
    """Fill what was left open: the recipe and read-out schedule from the stored study (or
    the defaults), the sampled settings as they will be sampled."""
    d = cfg.to_dict()
    if d["recipe"] is None:
        d["recipe"] = prev.recipe if prev else full_recipe({})
    if d["checkpoints_per_epoch"] is None:
        d["checkpoints_per_epoch"] = prev.checkpoints_per_epoch if prev else 2
    given = {k: v for k, v in (d["sampled"] or {}).items() if v is not None}
    d["sampled"] = settings_for(behavior, {**(prev.sampled if prev else {}), **given})
    return StudyConfig.from_dict(d)


def create_study(cfg: StudyConfig, cache_dir: Path | None = None) -> Study:
    """Create a study, or extend one of the same name: grids merge (union of values per
    axis) and every finished cell is kept. Settings left open (recipe None,
    checkpoints_per_epoch None) take the stored study's; settings given must match it. The
    scoring run must be finished."""
    run = open_run(cfg.run, cache_dir)
    if run.manifest.get("status") != "complete":
        raise StudyError(f"Scoring run {run.key} is {run.manifest.get('status', '?')}: finish "
                         "it first (the same `python -m lls score` command resumes it).")
    control = ",".join(r.key for r in open_controls(cfg.control_run, cache_dir)) \
        if cfg.control_run else None  # one key, or a panel of keys
    behavior = Behavior.from_dict(run.manifest["config"]["behavior"])
    grid, names = _teacher_axis(run, cfg.grid, cache_dir)
    path = studies_root(cache_dir) / cfg.name
    old = _read(path, cache_dir)
    prev = old.config if old else None
    if prev and prev.teacher_names:
        names = {**prev.teacher_names, **names}
    cfg = _normalised(StudyConfig.from_dict({**cfg.to_dict(), "run": run.key, "grid": grid,
                                             "control_run": control,
                                             "teacher_names": names}), behavior, prev)
    extra = []
    if old:
        for fld in ("run", "control_run", "recipe", "lr_scheduler", "sampled",
                    "checkpoints_per_epoch"):
            if getattr(prev, fld) != getattr(cfg, fld):
                diff = _what_differs(getattr(prev, fld), getattr(cfg, fld))
                raise StudyError(f"Study {cfg.name!r} exists with another {fld} ({diff}): "
                                 "extend it with the same one (or leave it out: the stored "
                                 "one is used), or pick a new study name.")
        grid = {a: list(prev.grid.get(a, [])) + list(cfg.grid.get(a, []))
                for a in dict.fromkeys([*prev.grid, *cfg.grid])}
        for a in grid:  # an axis new to the grid keeps the paper value for the old cells
            if a not in prev.grid or a not in cfg.grid:
                grid[a] = grid[a] + [PAPER[a]]
        cfg = StudyConfig.from_dict({**cfg.to_dict(), "grid": grid})
        extra = old.extra
    study = Study(path, cfg, extra, old.upgraded_from if old else None)
    study.save()
    return study


# What must agree between the study's run and a teacher's run for their cells to compare:
# the same pairs (data, model, scoring options) and the same behavior to read out.
_SAME_CONFIG = ("data", "truncation", "max_prompt_tokens", "neutral", "filter_contaminated")
_SAME_BEHAVIOR = ("kind", "name", "target", "filter_words", "metric", "regex")


def _teacher_axis(run, grid: dict, cache_dir: Path | None) -> tuple[dict, dict]:
    """The grid with the teacher axis resolved to full run keys (the study's own run as
    None) and the teachers' names in words; refuses a run that is unfinished or does not
    score the same pairs for the same behavior."""
    from ..scoring.runs import describe_teacher

    names = {run.key: teacher_name(run)}
    values = grid.get("teacher")
    if not values:
        return dict(grid), names
    out = []
    for v in values:
        if v is None or run.key.startswith(str(v)):
            out.append(None)
            continue
        other = open_run(str(v), cache_dir)
        if other.manifest.get("status") != "complete":
            raise StudyError(f"Teacher run {other.key} is {other.manifest.get('status', '?')}:"
                             " finish scoring it first.")
        a, b = run.manifest.get("config") or {}, other.manifest.get("config") or {}
        model = lambda c: {k: v for k, v in (c.get("model") or {}).items()  # noqa: E731
                           if k != "device"}
        diff = [k for k in _SAME_CONFIG if a.get(k) != b.get(k)]
        diff += ["model"] if model(a) != model(b) else []
        diff += [f"behavior {k}" for k in _SAME_BEHAVIOR
                 if (a.get("behavior") or {}).get(k) != (b.get("behavior") or {}).get(k)]
        if (a.get("sampling") or {}) != (b.get("sampling") or {}):
            diff.append("sampled prompts")
        if diff:
            raise StudyError(f"Teacher run {other.key} ({describe_teacher(other.config)}) "
                             f"differs from the study's run {run.key} in {', '.join(diff)}: a "
                             "teacher axis compares teachers on the same pairs and behavior. "
                             "Score those pairs with that teacher (the same command with "
                             "--teacher-prompt / --teacher-adapter / --teacher-model).")
        names[other.key] = teacher_name(other)
        out.append(other.key)
    return {**grid, "teacher": list(dict.fromkeys(out))}, names


def teacher_candidates(run_key: str, cache_dir: Path | None = None) -> list[str]:
    """Finished runs that can join `run_key`'s study as teachers (same pairs and behavior)."""
    from ..scoring.runs import list_runs

    run = open_run(run_key, cache_dir)
    out = []
    for r in list_runs(cache_dir):
        if r.key == run.key or not r.complete:
            continue
        try:
            _teacher_axis(run, {"teacher": [r.key]}, cache_dir)
        except StudyError:
            continue
        out.append(r.key)
    return out


def teacher_name(run) -> str:
    """A teacher in a few words for tables: its prompt's beginning, or its adapter/model."""
    cfg = run.config
    if cfg.teacher is not None:
        return cfg.teacher.label()
    words = " ".join(cfg.behavior.system_prompt.split())
    return f'prompt "{words[:40]}{"…" if len(words) > 40 else ""}"'


def _what_differs(a, b) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
        return ", ".join(f"{k}: stored {a.get(k)!r}, given {b.get(k)!r}" for k in keys)
    return f"stored {a!r}, given {b!r}"


def _read(path: Path, cache_dir: Path | None) -> Study | None:
    d = read_json_safe(path / "study.json")
    if not d:
        return None
    version = str(d.get("version", "1"))
    if version == STUDY_VERSION:
        return Study(path, StudyConfig.from_dict(d["config"]), d.get("extra", []),
                     d.get("upgraded_from"))
    if version == "2":  # same config and confirmations; the cells are read again
        study = Study(path, StudyConfig.from_dict(d["config"]), d.get("extra", []),
                      upgraded_from=version)
        study.save()
        return study
    if version != "1":
        raise StudyError(f"Study {path.name!r} was written by study version {version}, which "
                         f"this installation ({STUDY_VERSION}) cannot read: update LLS Studio.")
    # version 1: partial recipe, sampled settings without kinds, confirmations as bare
    # settings (kept as extra cells judged at their last step, as then). The cells get new
    # ids and are re-read when the queue runs; the adapters are reused.
    c = dict(d["config"])
    c.setdefault("checkpoints_per_epoch", 2)
    extra = [{"settings": s, "confirms": None, "judge_step": None, "every": None}
             for s in d.get("extra", [])]
    run = open_run(c["run"], cache_dir)
    behavior = Behavior.from_dict(run.manifest["config"]["behavior"])
    cfg = _normalised(StudyConfig.from_dict(c), behavior, None)
    study = Study(path, cfg, extra, upgraded_from=version)
    study.save()
    return study


def open_study(name: str, cache_dir: Path | None = None) -> Study:
    """A study by name (an older version is upgraded, see the module doc)."""
    study = _read(studies_root(cache_dir) / name, cache_dir)
    if study is None:
        raise StudyError(f"No study named {name!r} under {studies_root(cache_dir)}; create it "
                         "with `python -m lls study create NAME --run KEY ...` (or list them "
                         "with `python -m lls study list`).")
    return study


def list_studies(cache_dir: Path | None = None) -> list[Study]:
    root = studies_root(cache_dir)
    if not root.is_dir():
        return []
    return [open_study(p.name, cache_dir) for p in sorted(root.iterdir())
            if (p / "study.json").is_file()]
