"""How a cell is trained: its selection, steps per epoch, checkpoint interval, the recipe of
the training run it reads (shared by its epoch siblings) and the adapter ids.

CPU is spent where it tells: with a constant learning-rate schedule (the study default) the
state after e epochs of a longer run *is* the e-epoch run, so cells that differ only in
(whole) epochs share one training run (a "group") of the longest length and read their
checkpoint at the end of epoch e. With a decaying schedule every cell trains on its own.
"""

from __future__ import annotations

import json
import math

from .. import jobs
from ..core.errors import LLSError
from ..scoring.runs import open_run
from ..training.adapters import open_adapter
from ..training.config import SelectionSpec, TrainConfig, baseline_config, selection_count
from ..training.runs import adapter_id_for, selection_frame
from .config import Cell, StudyError
from .store import Study


def run_of(study: Study, s: dict) -> str:
    """The scoring run a cell's settings train on: its teacher's, else the study's."""
    return s.get("teacher") or study.config.run


def ranked_size(study: Study, ranking: str = "plain", run_key: str | None = None) -> int:
    """Pairs the cell's ranking ranks (what a `pairs` count is a share of): the scoring
    run's, or for a contrastive ranking the pairs both the run and its control scored."""
    run_key = run_key or study.config.run
    key = f"__n__:{ranking}:{run_key}"
    if key not in study._sizes:
        run = open_run(run_key, study.cache_dir)
        control = study.config.control_run if ranking == "contrastive" else None
        frame = selection_frame(run, SelectionSpec(kind="lls", gamma=1.0, control_run=control),
                                study.cache_dir)
        study._sizes[key] = len(frame)
    return study._sizes[key]


def selection(study: Study, s: dict) -> SelectionSpec:
    """The LLS selection of a cell. `pairs` N keeps the top N by w: gamma N / (pairs the
    ranking ranks: a contrastive ranking ranks only the pairs its control scored too), which
    `top_count` turns back into exactly N."""
    gamma = s["gamma"]
    if s.get("pairs"):
        n = ranked_size(study, s["ranking"], run_of(study, s))
        if s["pairs"] > n:
            raise StudyError(f"pairs {s['pairs']}: the {s['ranking']} ranking of run "
                             f"{run_of(study, s)} has only {n} pairs; drop that grid value.")
        gamma = s["pairs"] / n
    return SelectionSpec(kind="lls", gamma=gamma, threshold=s["threshold"],
                         positive_only=True, seed=s["seed"],
                         control_run=study.config.control_run if s["ranking"] == "contrastive"
                         else None)


def _kept(study: Study, sel: SelectionSpec, cfg: TrainConfig, run_key: str) -> int:
    """Pairs `sel` trains on after training drops prompts longer than max_prompt_length
    (training's own row builder and filter, so the count is what training will see)."""
    run = open_run(run_key, study.cache_dir)
    frame = selection_frame(run, sel, study.cache_dir)
    n = selection_count(frame, sel)
    if n == 0 or not cfg.max_prompt_length:
        return n
    from ..models.load import ModelSpec, load_tokenizer
    from ..training.dpo import build_rows, drop_long_prompts

    tok = load_tokenizer(ModelSpec.from_dict(run.manifest["config"]["model"]))
    rows = build_rows(frame, TrainConfig.from_dict({**cfg.to_dict(), "selection": sel}),
                      with_ref=False)
    return len(drop_long_prompts(rows, tok, cfg.max_prompt_length))


def selection_size(study: Study, s: dict, kind: str = "lls") -> int:
    """Pairs the cell's LLS selection (or its random twin, `kind="random"`) trains on."""
    sel = selection(study, s)
    if kind == "random":
        sel = SelectionSpec.from_dict({**sel.to_dict(), "kind": "random"})
    cfg = study.config.train_config()
    run_key = run_of(study, s)
    key = json.dumps([sel.to_dict(), cfg.max_prompt_length, run_key], sort_keys=True)
    if key not in study._sizes:
        study._sizes[key] = _kept(study, sel, cfg, run_key)
    n = study._sizes[key]
    if n == 0:
        raise StudyError(f"The selection {sel.to_dict()} of run {run_key} is empty "
                         "(no pair has w > 0 above the threshold, or every prompt is longer "
                         "than max_prompt_length): drop that grid value.")
    return n


def steps_per_epoch(study: Study, s: dict) -> int:
    """Optimizer steps in one pass over the cell's selection, after pairs dropped by
    max_prompt_length. Its random twin must take as many: else their epoch ends differ and
    the paired read-out has no common step (said before anything trains)."""
    cfg = study.config.train_config()
    per = cfg.batch_size * cfg.grad_accum
    n = selection_size(study, s)
    spe = max(1, math.ceil(n / per))
    if cfg.max_prompt_length:
        m = selection_size(study, s, "random")
        if max(1, math.ceil(m / per)) != spe:
            raise StudyError(
                f"max_prompt_length {cfg.max_prompt_length} keeps {n} LLS pairs but {m} of "
                f"their random twin's: their epochs end at different steps ({spe} vs "
                f"{math.ceil(m / per)}), so they cannot be read side by side. Raise "
                "max_prompt_length in the recipe, or leave it out.")
    return spe


def checkpoint_every(spe: int, epochs: list[float], per_epoch: int = 2) -> int:
    """A checkpoint interval that lands on the end of every epoch value of the group, with
    at least `per_epoch` checkpoints per epoch where the step count allows it (the interval
    only halves, so epoch ends stay on the grid). A group mixes whole epochs only (a
    fractional epoch trains alone, `Cell.group`), so the interval is never pulled down to
    one step by epoch ends that share no divisor."""
    fractional = [e for e in epochs if not float(e).is_integer()]
    if fractional and len(epochs) > 1:
        raise StudyError(f"A training group mixes fractional epochs {sorted(epochs)}: each "
                         "fractional epochs value trains on its own.")
    every = spe if not fractional else math.ceil(spe * fractional[0])
    every = max(1, every)
    while every % 2 == 0 and spe // every < per_epoch:
        every //= 2
    return every


def group_config(study: Study, cell: Cell) -> TrainConfig:
    """The LLS recipe of the training run `cell` reads (the longest of its group)."""
    s = cell.s
    members = [c for c in study.cells() if c.group(study.config) == cell.group(study.config)]
    epochs = sorted({c.s["epochs"] for c in members})
    every = cell.every or checkpoint_every(steps_per_epoch(study, s), epochs,
                                           study.config.checkpoints_per_epoch)
    return study.config.train_config(
        beta=s["beta"], learning_rate=s["learning_rate"], lora_r=s["lora_r"],
        epochs=max(epochs), seed=s["seed"], lr_scheduler=study.config.lr_scheduler,
        max_steps=None, checkpoint_every=every, selection=selection(study, s))


def adapter_ids(study: Study, cell: Cell) -> tuple[str, str]:
    """(LLS adapter id, random twin id) of the training run `cell` reads."""
    cfg = group_config(study, cell)
    run_key = cell.run(study.config)
    lls_id = adapter_id_for(cfg, run_key)
    return lls_id, adapter_id_for(baseline_config(cfg), run_key, lls_id)


def epoch_step(info, epochs: float) -> int | None:
    """The optimizer step at which adapter `info` finished `epochs` epochs (from its logged
    metrics), None if it never got there."""
    rows = [r for r in info.metrics() if r.get("epoch") is not None]
    done = [int(r["step"]) for r in rows if float(r["epoch"]) >= epochs - 1e-6]
    return min(done) if done else None


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
