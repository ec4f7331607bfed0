"""Running a study's queue (`lls.studies.config`): train each cell's LLS adapter and its random twin
in child processes, read the paired effects and the sampled read-outs, write the cell's result.

`run_study` works through the queue in this process (the CLI and the background job call it);
`submit_study` starts it as a background job; `submit_cells` sends the cells to a `submitit`
executor (Slurm, or local processes), one job per training group.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .. import jobs
from ..core.cache import atomic_write_json, read_json_safe
from ..core.errors import LLSError
from ..evaluation import effects
from ..evaluation.llr import with_prompts
from ..evaluation.readouts import plan, sampled_diff, sampled_readout
from ..models.generation import check_adapter_dir
from ..models.load import quiet_third_party_aliases
from ..scoring.lifecycle import owner_alive, owner_record
from ..training.adapters import open_adapter
from ..training.config import TrainConfig, baseline_config
from ..training.runs import train_command
from .config import Cell, StudyError
from .plan import adapter_ids, epoch_step, group_config
from .store import Study, checkpoint_dir, now, open_study


def _train_one(study: Study, cfg: TrainConfig, adapter_id: str, baseline_of: str | None,
               log=print, run_key: str | None = None) -> None:
    """Train (or resume, or skip if finished) one adapter in a child process, so its memory
    goes back to the system when it ends."""
    try:
        info = open_adapter(adapter_id, study.cache_dir)
        if info.manifest.get("status") == "done" and info.final_path is not None:
            return
    except LLSError:
        pass
    argv = train_command(cfg, run_key or study.config.run, adapter_id=adapter_id,
                         baseline_of=baseline_of, cache_dir=study.cache_dir)
    log(f"[lls.studies] training {adapter_id} ({'random twin' if baseline_of else 'LLS'})")
    returncode = _run_child(argv)
    if returncode != 0:
        try:
            why = open_adapter(adapter_id, study.cache_dir).manifest.get("error")
        except LLSError:
            why = "it stopped before creating the adapter"
        raise StudyError(f"training {adapter_id} exited with {returncode}"
                         f"{' (killed: out of memory?)' if returncode == -9 else ''}: "
                         f"{why or 'see the job log'}; running the queue again resumes it.")


def _run_child(argv: list[str]) -> int:
    """Run a training child and return its exit code. A SIGTERM or Ctrl-C to the study process
    reaches the child too (it stops at its next step, resumable), so no training keeps running
    after the study that started it is stopped."""
    proc = subprocess.Popen(argv, env=os.environ.copy())  # its output goes where ours does

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


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
    cfg = group_config(study, cell)  # raises before training if the cell cannot pair
    lls_id, rnd_id = adapter_ids(study, cell)
    run_key = cell.run(study.config)
    _train_one(study, cfg, lls_id, None, log, run_key)
    _train_one(study, baseline_config(cfg), rnd_id, lls_id, log, run_key)
    return lls_id, rnd_id


def _levels(info) -> dict | None:
    d = read_json_safe(info.path / "meter_levels.json")
    return d.get("levels") if d else None


def train_seconds(metrics: list[dict], upto: int) -> float:
    """Wall seconds of training up to step `upto`, summed over the processes that trained
    it: each process logs `elapsed` from its own start, so a drop marks a resume."""
    total, prev = 0.0, None
    for r in metrics:
        if r.get("elapsed") is None or int(r.get("step", 0)) > upto:
            continue
        e = float(r["elapsed"])
        if prev is not None and e < prev:
            total += prev
        prev = e
    return total + (prev or 0.0)


def meter_seconds(meter: list[dict], upto: int) -> float:
    """Seconds of the meter read-outs at steps <= `upto`."""
    return sum(float(r.get("seconds") or 0) for r in meter if int(r.get("step", 0)) <= upto)


def _costs(a, b, step: int, sampled_s: float) -> dict:
    """Training, meter and sampled seconds of a cell (both adapters, up to its step)."""
    meter = sum(meter_seconds(x.meter(), step) for x in (a, b))
    inside = sum(meter_seconds(x.meter(), step - 1) for x in (a, b))  # logged within elapsed
    train = sum(train_seconds(x.metrics(), step) for x in (a, b)) - inside
    return {"training": round(max(0.0, train), 1), "meter": round(meter, 1),
            "sampled": round(sampled_s, 1),
            "total": round(max(0.0, train) + meter + sampled_s, 1)}


class _Sampler:
    """Sampled read-outs of checkpoints over one loaded base model (loaded on first use).
    Each checkpoint's adapter is attached for its read-out and removed after it, and
    `release` drops the model while children train: the study process stays flat."""

    def __init__(self, study: Study, behavior):
        self.study, self.behavior = study, behavior
        self.settings = study.config.sampled
        self.model = self.tokenizer = None
        self.loads = 0

    def _load(self):
        if self.model is None:
            from ..models.load import load_model
            from ..scoring.runs import scored_model

            jobs.report_phase("loading model", "for the sampled read-outs")
            # the run's precision: read-outs compute as the cells' training did
            self.model, self.tokenizer = load_model(scored_model(self.study.run_manifest()))
            self.loads += 1
        return self.model

    def release(self) -> None:
        """Drop the base model (before children train; loaded again when next needed)."""
        self.model = self.tokenizer = None
        gc.collect()
        _trim()

    def __call__(self, kind: str, path: Path | None, system: bool = False,
                 run_key: str | None = None) -> dict:
        """One sampled read-out: of the base model, of the teacher (`system`: base + system
        prompt, or the teacher adapter or model of `run_key`'s run, default the study's), or
        of an adapter checkpoint."""
        base = self._load()
        t = time.time()
        if system:
            from ..models.teacher import Teacher, teacher_view
            from ..scoring.runs import open_run

            cfg = open_run(run_key or self.study.config.run, self.study.cache_dir).config
            with teacher_view(base, cfg.teacher, cfg.behavior.system_prompt) as (m, sp):
                r = sampled_readout(m, self.tokenizer, self.behavior, kind, self.settings,
                                    system_prompt=sp)
            r["seconds"] = round(time.time() - t, 2)
            return r
        model = base
        if path is not None:
            from peft import PeftModel

            # the one adapter check of every load: a peft directory with safetensors
            # weights, never a pickled .bin
            path = check_adapter_dir(path)
            with quiet_third_party_aliases():
                model = PeftModel.from_pretrained(base, str(path), is_trainable=False).eval()
        try:
            r = sampled_readout(model, self.tokenizer, self.behavior, kind, self.settings)
        finally:
            if path is not None:  # remove the LoRA layers: the base model as it was
                self.model = model.unload()
                del model
                gc.collect()
        r["seconds"] = round(time.time() - t, 2)
        return r


def _trim() -> None:
    try:  # glibc keeps freed heap pages resident unless asked to give them back
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reference_samples(study: Study, sampler: _Sampler, run_key: str | None = None) -> dict:
    """Sampled read-outs of base and of the teacher (base + system prompt, or the teacher of
    `run_key`'s run) per kind, once per study and teacher."""
    path = study.levels_path(run_key)
    saved = read_json_safe(path)
    if saved and saved.get("settings") == study.config.sampled:
        return saved["levels"]
    base = None
    for other in study.teachers():  # the base is the same for every teacher: read once
        got = read_json_safe(study.levels_path(other))
        if got and got.get("settings") == study.config.sampled:
            base = {k: v["base"] for k, v in got["levels"].items()}
            break
    levels = {k: {"base": (base or {}).get(k) or sampler(k, None),
                  "system": sampler(k, None, system=True, run_key=run_key)}
              for k in study.config.sampled["kinds"]}
    atomic_write_json(path, {"settings": study.config.sampled, "levels": levels})
    return levels


def _sample_step(study, sampler, levels, a, b, step: int) -> dict:
    kinds = {}
    for kind in study.config.sampled["kinds"]:
        got = {}
        for who, info in (("lls", a), ("random", b)):
            r = sampler(kind, checkpoint_dir(info.path, step))
            if "answers" in r:
                r["collapse"] = effects.sampled_collapse(
                    r["answers"], levels[kind]["base"].get("answers"), r["n"])
            got[who] = r
        kinds[kind] = {**got, "diff": sampled_diff(got["lls"], got["random"])}
    return {"step": step, "kinds": kinds}


def evaluate_cell(study: Study, cell: Cell, sampler: _Sampler) -> dict:
    """A finished cell's paired effects: the LLS - random curve up to the cell's step (the
    end of its epochs; a confirmation's judged step), the final and best checkpoints,
    sampled read-outs there, and the cost."""
    lls_id, rnd_id = adapter_ids(study, cell)
    a, b = open_adapter(lls_id, study.cache_dir), open_adapter(rnd_id, study.cache_dir)
    key = plan(study.behavior(cell))["paired"]
    step = cell.judge_step or epoch_step(a, cell.s["epochs"])
    if step is None:
        raise StudyError(f"Adapter {lls_id} has no logged step at epoch {cell.s['epochs']}.")
    ckpts = {s for s, _ in a.checkpoints()} & {s for s, _ in b.checkpoints()}
    if step not in ckpts:
        raise StudyError(f"No checkpoint of {lls_id} and its twin at step {step}: the "
                         "group's checkpoint interval misses it.")
    levels = with_prompts(_levels(a), study.cache_dir)
    curve = []
    rb = {r["step"]: r for r in b.meter() if r.get("readout")}
    for r in sorted(a.meter(), key=lambda r: r["step"]):
        if r["step"] <= step and r.get("readout") and r["step"] in rb:
            # every step keeps its per-unit differences: the verdict's corrected interval
            # is computed from those of whichever step is picked
            curve.append({"step": r["step"], **effects.paired_step(
                with_prompts(r["readout"], study.cache_dir),
                with_prompts(rb[r["step"]]["readout"], study.cache_dir), levels, units=True)})
    final = curve[-1] if curve else None
    names = study.config.teacher_names
    jobs.report_phase("sampled read-outs", cell.label(names=names))
    ref = reference_samples(study, sampler, cell.run(study.config))
    t = time.time()
    sampled = {"final": _sample_step(study, sampler, ref, a, b, step)}
    excluded = [step] if effects.step_collapsed(final, sampled["final"]["kinds"]) else []
    best = None if cell.judge_step else pick_sampled_best(
        [r for r in curve if r["step"] in ckpts], key, step, excluded,
        lambda s: _sample_step(study, sampler, ref, a, b, s), sampled)
    return {"cell": cell.id(study.config), "settings": cell.s,
            "label": cell.label(names=names), "teacher_run": cell.run(study.config),
            "confirms": cell.confirms, "judge_step": cell.judge_step,
            "adapters": {"lls": lls_id, "random": rnd_id}, "step": step,
            "n_pairs": a.manifest.get("selection", {}).get("n_pairs"), "readout": key,
            "curve": curve, "final": final, "best": best, "collapsed_steps": excluded,
            "sampled": sampled, "sampled_levels": ref,
            "cost": _costs(a, b, step, time.time() - t), "finished": now()}


MAX_BEST_TRIES = 3  # sampled read-outs of best-step candidates before settling for the last step


def pick_sampled_best(curve: list[dict], readout: str, last: int, excluded: list,
                      sample, sampled: dict) -> dict | None:
    """The cell's best checkpoint (`effects.best_step`), always one whose samples were read:
    a best step other than the `last` one (sampled already, in `sampled["final"]`) is sampled
    (`sample(step)`, stored as `sampled["best"]`); if its samples collapsed it joins
    `excluded` (the study's one rule, `effects.step_collapsed`) and the next best is tried.
    After MAX_BEST_TRIES collapsed tries only the last step may be picked."""
    base = effects.base_row(curve)
    best = effects.best_step(curve, readout, base, exclude=excluded)
    for _ in range(MAX_BEST_TRIES):
        if best is None or best["step"] == last:
            return best
        got = sample(best["step"])
        if not effects.step_collapsed(best, got["kinds"]):
            sampled["best"] = got
            return best
        excluded.append(best["step"])
        best = effects.best_step(curve, readout, base, exclude=excluded)
    if best is None or best["step"] == last:
        return best
    return effects.best_step([r for r in curve if r["step"] in (0, last)], readout, base,
                             exclude=excluded)


def _reset_peak() -> None:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    """This process's peak resident memory since the last reset (MB), None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run_cell(study: Study, cell: Cell, sampler: _Sampler | None = None, log=print) -> dict:
    """Train (or reuse) a cell's two adapters and write its result with the cost and the
    study process's peak memory; errors are recorded on the cell and raised."""
    err = study.error_path(cell)
    _reset_peak()
    try:
        train_cell(study, cell, log)
        res = evaluate_cell(study, cell, sampler or _Sampler(study, study.behavior()))
    except LLSError as e:
        atomic_write_json(err, {"error": str(e), "time": now()})
        raise
    res["memory"] = {"peak_rss_mb": peak_rss_mb()}
    err.unlink(missing_ok=True)
    atomic_write_json(study.result_path(cell), res)
    return res


def run_study(name: str, cache_dir: Path | None = None, *, log=print,
              stop_on_error: bool = False) -> list[dict]:
    """Run every unfinished cell in queue order, one at a time; returns the new results.
    Safe to kill and re-run: finished cells are skipped, training resumes. One process per
    study: it says so in `running.json`, and a second one is refused while it lives."""
    study = open_study(name, cache_dir)
    other = study.running()  # refused only when its owner is known alive (this host)
    if other and owner_alive(other.get("owner")) and other["owner"].get("pid") != os.getpid():
        raise StudyError(f"Study {name!r} is already running (pid {other['owner'].get('pid')} "
                         f"on {other['owner'].get('host')}, since {other.get('started')}): "
                         "wait for it, or stop it first.")
    state = {"owner": owner_record(), "started": now()}
    atomic_write_json(study.running_path, state)
    try:
        return _work(study, state, log, stop_on_error)
    finally:
        study.running_path.unlink(missing_ok=True)


def _work(study: Study, state: dict, log, stop_on_error: bool) -> list[dict]:
    todo = [c for c in study.cells() if study.result(c) is None]
    sampler = _Sampler(study, study.behavior())
    out = []
    total = len(todo)
    for i in range(total):
        # a cell whose training run has finished (an epochs sibling of the cell just done)
        # costs only its sampled read-out: answer it before training the next group
        cell = next((c for c in todo if trained(study, c)), todo[0])
        todo.remove(cell)
        if not trained(study, cell):
            sampler.release()  # children train: the parent holds no model meanwhile
        label = cell.label(names=study.config.teacher_names)
        jobs.log_event(kind="study", cell=cell.id(study.config), label=label, index=i,
                       total=total)
        atomic_write_json(study.running_path, {**state, "index": i, "total": total,
                                               "cell": cell.id(study.config), "label": label})
        log(f"[lls.studies] cell {i + 1}/{total}: {label}")
        try:
            res = run_cell(study, cell, sampler, log)
            jobs.report_progress(i + 1, total, unit="cells", phase="study", force=True,
                                 message=f"{label} done")
        except LLSError as e:
            log(f"[lls.studies] cell failed: {e}")
            if stop_on_error:
                raise
            continue
        out.append(res)
        c = res.get("cost") or {}
        log(f"[lls.studies] cell {i + 1}/{total} done: peak RSS of the study process "
            f"{res['memory']['peak_rss_mb']} MB; seconds: training {c.get('training')}, "
            f"meter {c.get('meter')}, sampled {c.get('sampled')}")
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
    c = study.cell(cell_id)
    return study.result(c) or run_cell(study, c)


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
