"""Running a study's queue (`lls.studies.study`): train each cell's LLS adapter and its random twin
in child processes, read the paired effects and the sampled read-outs, write the cell's result.

`run_study` works through the queue in this process (the CLI and the background job call it);
`submit_study` starts it as a background job; `submit_cells` sends the cells to a `submitit`
executor (Slurm, or local processes), one job per training group.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .. import jobs
from ..core.behaviors import Behavior
from ..core.cache import atomic_write_json, read_json_safe
from ..core.errors import LLSError
from ..evaluation import effects
from ..scoring.runs import open_run
from ..training.adapters import open_adapter
from .study import (Cell, Study, StudyError, _now, adapter_ids, epoch_step, group_config,
                    open_study)
from ..training.config import TrainConfig, baseline_config
from ..training.runs import train_command


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
    log(f"[lls.studies.study] training {adapter_id} ({'random twin' if baseline_of else 'LLS'})")
    proc = subprocess.run(argv, stdout=sys.stdout, stderr=sys.stderr, env=os.environ.copy())
    if proc.returncode != 0:
        info = open_adapter(adapter_id, study.cache_dir)
        raise StudyError(f"training {adapter_id} exited with {proc.returncode}: "
                         f"{info.manifest.get('error') or 'see the job log'}")


def trained(study: Study, cell: Cell) -> bool:
    """True when both adapters `cell` reads have finished training."""
    try:
        ids = adapter_ids(study, cell)
    except LLSError:
        return False
    for aid in ids:
        try:
            info = open_adapter(aid, study.cache_dir)
        except LLSError:
            return False
        if info.manifest.get("status") != "done" or info.final_path is None:
            return False
    return True


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
            from ..models.generation import AdapterHost
            from ..models.load import ModelSpec, load_model

            run = open_run(self.study.config.run, self.study.cache_dir)
            jobs.report_phase("loading model", "for the sampled read-outs")
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
        r["collapse"] = effects.sampled_collapse(r["answers"], base.get("answers"), r["n"])
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
    best = effects.best_step([r for r in curve if r["step"] in ckpts], key,
                             effects.base_row(curve))
    jobs.report_phase("sampled read-outs", cell.label())
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
    total = len(todo)
    for i in range(total):
        # a cell whose training run has finished (an epochs sibling of the cell just done)
        # costs only its sampled read-out: answer it before training the next group
        cell = next((c for c in todo if trained(study, c)), todo[0])
        todo.remove(cell)
        jobs.log_event(kind="study", cell=cell.id(study.config), label=cell.label(),
                       index=i, total=total)
        log(f"[lls.studies.study] cell {i + 1}/{total}: {cell.label()}")
        try:
            out.append(run_cell(study, cell, sampler, log))
            jobs.report_progress(i + 1, total, unit="cells", phase="study", force=True,
                                 message=f"{cell.label()} done")
        except LLSError as e:
            log(f"[lls.studies.study] cell failed: {e}")
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
