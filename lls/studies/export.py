"""A study as one self-contained HTML file a researcher can send: the target, data, model and
recipe; the grid with every cell's paired effects and intervals (method stated); the curves
and sampled read-outs per cell beside the floor (base) and the ceiling (the teacher); the
verdict with its correction; the data's hygiene; the commands that reproduce the study; the
package versions and the date. Plotly's script is inlined once: the file opens with no
network (`python -m lls study report NAME --out report.html`, or the Studies page's
"Download report")."""

from __future__ import annotations

import datetime as _dt
import html
import json
import platform
import shlex
from importlib import metadata
from pathlib import Path

from ..core.cache import atomic_write_bytes
from ..evaluation.readouts import KIND_LABELS
from ..scoring.runs import ScoreConfig
from . import figures
from . import text as T
from .config import AXIS, AXES, PAPER, varying_axes
from .report import best_cell, hygiene, plan_for, sampled_at, table, target
from .store import Study, open_study

PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "numpy",
            "pandas", "plotly", "streamlit")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;text-align:left}
th{background:#f4f4f4}code,pre{background:#f6f6f6;font-size:.85em}
pre{padding:.6em;white-space:pre-wrap;word-break:break-all}
.verdict{padding:.8em;border-left:4px solid #1f77b4;background:#f3f8fc}
.warn{padding:.6em;border-left:4px solid #d62728;background:#fdf3f3}
.small{color:#666;font-size:.85em}
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p class='small'>None.</p>"
    head = list(rows[0])
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_e(r.get(h, ''))}</td>" for h in head) + "</tr>"
            for r in rows]
    return "".join(out) + "</table>"


def _kv(d: dict) -> str:
    return _table([{"setting": k, "value": json.dumps(v) if isinstance(v, (dict, list))
                    else v} for k, v in d.items()])


def package_versions() -> dict:
    """Python and the versions of the packages a study's numbers depend on."""
    out = {"python": platform.python_version(), "lls-studio": _version("lls-studio")}
    out.update({p: _version(p) for p in PACKAGES})
    return out


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def reproduce_commands(study: Study) -> list[str]:
    """The commands that rebuild the study from nothing: score the run, create the study
    with its grid, recipe, schedule and read-out settings, queue its confirmations, run it."""
    cfg = study.config
    m = study.run_manifest()
    score = ScoreConfig.from_dict(m["config"])
    cmds = [shlex.join(["python", "-m", "lls", "score", "--config",
                        json.dumps(score.to_dict(), ensure_ascii=False)])]
    if cfg.control_run:
        ctl = ScoreConfig.from_dict(study_control_manifest(study)["config"])
        cmds.append(shlex.join(["python", "-m", "lls", "score", "--config",
                                json.dumps(ctl.to_dict(), ensure_ascii=False)]))
    argv = ["python", "-m", "lls", "study", "create", cfg.name, "--run", cfg.run[:16]]
    if cfg.control_run:
        argv += ["--control-run", cfg.control_run[:16]]
    for axis in AXES:
        values = cfg.grid.get(axis)
        if values and values != [PAPER[axis]]:
            argv += [f"--{AXIS[axis].flag.replace('_', '-')}",
                     ",".join("none" if v is None else str(v) for v in values)]
    s = cfg.sampled
    argv += ["--recipe", json.dumps(cfg.recipe, sort_keys=True), "--lr-scheduler",
             cfg.lr_scheduler, "--checkpoints-per-epoch", str(cfg.checkpoints_per_epoch),
             "--sampled", ",".join(s.get("kinds", [])), "--questions",
             str(s.get("questions")), "--samples", str(s.get("samples"))]
    tokens = s.get("max_new_tokens") or {}
    if len(set(tokens.values())) == 1:
        argv += ["--max-new-tokens", str(next(iter(tokens.values())))]
    if s.get("stem"):
        argv += ["--stem", s["stem"]]
    cmds.append(shlex.join(argv))
    cmds += [shlex.join(["python", "-m", "lls", "study", "confirm", cfg.name])
             for e in study.extra if e.get("confirms")]
    cmds += [shlex.join(["python", "-m", "lls", "study", "run", cfg.name]),
             shlex.join(["python", "-m", "lls", "study", "report", cfg.name, "--out",
                         f"{cfg.name}.html"])]
    return cmds


def study_control_manifest(study: Study) -> dict:
    from ..scoring.runs import open_run

    return open_run(study.config.control_run, study.cache_dir).manifest


class _Figures:
    """Figures as HTML divs, plotly's script inlined with the first one only."""

    def __init__(self):
        self.first = True

    def __call__(self, fig) -> str:
        if fig is None:
            return ""
        out = fig.to_html(full_html=False, include_plotlyjs=self.first,
                          config={"displaylogo": False, "responsive": True})
        self.first = False
        return f"<div class='figure'>{out}</div>"


def report_html(study: Study, *, now: _dt.datetime | None = None) -> str:
    """The study as one self-contained HTML page (see the module doc)."""
    now = now or _dt.datetime.now()
    fig = _Figures()
    t = target(study)
    plan = plan_for(study)
    rows = table(study)
    best = best_cell(study)
    kinds = study.config.sampled.get("kinds", [])
    hyg = hygiene(study)
    levels = study.teacher_levels()
    parts = [f"<h1>Study {_e(study.name)}</h1>",
             f"<p class='small'>Report made {_e(now.isoformat(timespec='seconds'))} by LLS "
             f"Studio on {_e(platform.node())} ({_e(platform.platform())}); reproduce it with "
             f"the commands below. Every effect is LLS − its same-size random twin (the same "
             f"recipe and seed on a random subset of the same size), read at each cell's "
             f"last step.</p>"]
    # ----------------------------------------------------------------- what was studied
    parts.append("<h2>Target, data, model and recipe</h2>")
    parts.append(_kv({"behavior": t["behavior"], "model (teacher and student)": t["model"],
                      "data": t["data"], "scored pairs": t["pairs"], "scoring run": t["run"],
                      "control run (contrastive)": study.config.control_run,
                      "learning-rate schedule": study.config.lr_scheduler,
                      "meter read-outs per epoch": study.config.checkpoints_per_epoch,
                      "grid": study.config.grid, "sampled read-outs": study.config.sampled}))
    parts.append("<p>The recipe every cell shares:</p>" + _kv(study.config.recipe or {}))
    # ----------------------------------------------------------------- the verdict
    parts.append("<h2>Verdict</h2>")
    parts.append(f"<div class='verdict'>{_e(T.verdict_line(best))}</div>")
    if best and best.get("correction"):
        c = best["correction"]
        parts.append(f"<p class='small'>Correction for the search: {_e(c['text'])} "
                     f"({_e(c['method'])}, N = {c['n']}, family-wise error 5%). A cell that "
                     "clears 0 only before the correction is a candidate until a "
                     "confirmation (the same setting with a fresh seed, judged at the picked "
                     "step) clears 0 on its own.</p>")
    # ----------------------------------------------------------------- floor and ceiling
    parts.append("<h2>Floor (base) and ceiling (teacher)</h2>")
    lv_rows = []
    for kind in kinds:
        for i, (teacher_name, lvs) in enumerate(levels):
            for who, name in (("base", "base (floor)"),
                              ("system", f"teacher {teacher_name} (the ceiling)")):
                lv = (lvs.get(kind) or {}).get(who)
                if lv and lv.get("n") and (who == "system" or i == 0):
                    lv_rows.append({"read-out": KIND_LABELS.get(kind, kind), "model": name,
                                    "share (95% interval over questions)": T.level_text(lv)})
    parts.append(_table(lv_rows) if lv_rows else
                 "<p class='small'>No sampled levels yet (they are read with the first "
                 "cell).</p>")
    parts.append("<p class='small'>The paired log-probability read-outs (margin, gap closed) "
                 "have the base model at 0 and, for gap closed, the teacher at 1.</p>")
    # ----------------------------------------------------------------- the grid
    parts.append("<h2>The grid: every cell's paired effects</h2>")
    parts.append(_table(T.cells_table(rows, plan["paired_all"], kinds)))
    parts.append(f"<p class='small'>{_e(T.READ_AT)} {_e(T.METHODS)}</p>")
    varying = varying_axes(study.config) or ["gamma"]
    for readout in plan["paired_all"]:
        parts.append(fig(figures.effect_lines(
            rows, readout, varying[0], varying[1] if len(varying) > 1 else None,
            AXIS[varying[0]].label, AXIS[varying[1]].label if len(varying) > 1 else None)))
    # ----------------------------------------------------------------- per cell
    parts.append("<h2>Curves and sampled read-outs per cell</h2>")
    for r in rows:
        res = study.result(study.cell(r["cell"])) if r["status"] == "done" else None
        parts.append(f"<h3>{_e(r['full_label'])} <span class='small'>({_e(r['status'])}, "
                     f"cell {_e(r['cell'])})</span></h3>")
        if res is None:
            continue
        for readout in plan["paired_all"]:
            parts.append(fig(figures.paired_curve(res["curve"], readout)))
        for kind, got in sampled_at(res).items():
            parts.append(fig(figures.sampled_bars(
                (res.get("sampled_levels") or {}).get(kind) or {}, got,
                f"Sampled {KIND_LABELS.get(kind, kind)} at step {res['step']}")))
    # ----------------------------------------------------------------- hygiene
    parts.append("<h2>Data hygiene</h2>")
    if hyg.get("readout_overlap_text"):
        parts.append(f"<div class='warn'>{_e(hyg['readout_overlap_text'])}</div>")
    parts.append(f"<p>{_e(hyg.get('summary') or 'No hygiene report recorded for this run.')}"
                 "</p>")
    # ----------------------------------------------------------------- reproduce
    parts.append("<h2>Reproduce</h2><p class='small'>From a checkout of LLS Studio with the "
                 "same data file (the scoring run's key fingerprints its content):</p>")
    parts.append("<pre>" + _e("\n\n".join(reproduce_commands(study))) + "</pre>")
    parts.append("<h2>Package versions</h2>" + _kv(package_versions()))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Study {_e(study.name)} · LLS Studio</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>")


def write_report(name: str, out: str | Path, cache_dir: Path | None = None) -> Path:
    """Write study `name`'s HTML report to `out` (atomically); returns the path."""
    path = Path(out)
    atomic_write_bytes(path, report_html(open_study(name, cache_dir)).encode("utf-8"))
    path.chmod(0o644)  # a file to send: readable like any other document
    return path
