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

    def run_manifest(self) -> dict:
        return open_run(self.config.run, self.cache_dir).manifest

    def behavior(self) -> Behavior:
        return Behavior.from_dict(self.run_manifest()["config"]["behavior"])

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
    path = studies_root(cache_dir) / cfg.name
    old = _read(path, cache_dir)
    prev = old.config if old else None
    cfg = _normalised(StudyConfig.from_dict({**cfg.to_dict(), "run": run.key,
                                             "control_run": control}), behavior, prev)
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
