"""The adapter registry: trained (or training) adapters under `<cache>/adapters/<id>/`.

Layout (written by `lls.training`): `manifest.json` (id, status, base model, student, score
run, behavior, selection, train config, final metrics, job id, `baseline_of`),
`checkpoints/step-XXXXXX/` (peft adapters; step 0 = the untrained LoRA init), `final/`,
`metrics.jsonl`, `evals.jsonl`, `meter.jsonl`, `meter_levels.json`, `trainer/checkpoint-N/`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import jobs
from ..core.cache import read_json_safe, read_jsonl, runs_root
from ..core.errors import LLSError
from ..jobs.store import ACTIVE


@dataclass
class AdapterInfo:
    """One trained (or training) adapter under `<cache>/adapters/<id>/`."""

    id: str
    path: Path

    @property
    def manifest(self) -> dict:
        return read_json_safe(self.path / "manifest.json") or {}

    @property
    def status(self) -> str:
        """Manifest status, corrected by the job system when the run died without saying so."""
        m = self.manifest
        status = m.get("status", "unknown")
        if status in ACTIVE and m.get("job_id"):
            try:
                job = jobs.get(m["job_id"])
            except LLSError:
                return status
            if not job.is_active:
                return job.status if job.status != "done" else status
        return status

    @property
    def final_path(self) -> Path | None:
        p = self.path / "final"
        return p if (p / "adapter_config.json").is_file() else None

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Exported peft checkpoints as (step, path), sorted by step."""
        out = []
        for p in (self.path / "checkpoints").glob("step-*"):
            if (p / "adapter_config.json").is_file():
                try:
                    out.append((int(p.name.split("-")[1]), p))
                except ValueError:
                    continue
        return sorted(out)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.path / "metrics.jsonl")

    def evals(self) -> list[dict]:
        return read_jsonl(self.path / "evals.jsonl")

    def meter(self) -> list[dict]:
        """Effect-meter read-outs, one per measured step (see `lls.evaluation.meter.summary_rows`)."""
        return read_jsonl(self.path / "meter.jsonl")

    def meter_levels(self) -> dict | None:
        """{"base": ..., "system": ...}: the meter's floor and ceiling for this adapter."""
        d = read_json_safe(self.path / "meter_levels.json")
        return d.get("levels") if d else None

    def summary(self) -> dict:
        """One table row: selection, recipe, final training metrics, eval and meter."""
        m = self.manifest
        tr, sel, met = m.get("train", {}), m.get("selection", {}), m.get("metrics") or {}
        ev = met.get("final_eval") or {}
        fm = met.get("final_meter") or {}
        return {
            "adapter": self.id, "status": self.status, "selection": sel.get("kind"),
            "pairs": sel.get("n_pairs"), "gamma": sel.get("gamma"),
            "threshold": sel.get("threshold"), "baseline of": m.get("baseline_of"),
            "student": (m.get("student") or {}).get("name"), "beta": tr.get("beta"),
            "lr": tr.get("learning_rate"), "r": tr.get("lora_r"), "alpha": tr.get("lora_alpha"),
            "epochs": tr.get("epochs"), "batch": tr.get("batch_size"), "steps": met.get("steps"),
            "final loss": met.get("final_loss"), "margin": met.get("margin_last5"),
            "accuracy": met.get("accuracy_last5"), "eval rate": ev.get("rate"),
            "eval k/n": f"{ev['k']}/{ev['n']}" if ev else None,
            "meter LLR": fm.get("llr"), "gap closed": fm.get("gap_closed"),
            "probe margin": fm.get("margin"),
            "s/step": met.get("s_per_step"), "created": m.get("created"), "path": str(self.path),
        }


def adapters_root(cache_dir: Path | None = None) -> Path:
    """`<cache>/adapters`."""
    return runs_root("adapters", cache_dir)


def open_adapter(adapter_id: str, cache_dir: Path | None = None) -> AdapterInfo:
    """An adapter by id (or a unique id prefix)."""
    root = adapters_root(cache_dir)
    exact = root / adapter_id
    if (exact / "manifest.json").is_file():
        return AdapterInfo(adapter_id, exact)
    matches = sorted(p for p in root.glob(f"{adapter_id}*") if (p / "manifest.json").is_file())
    if len(matches) != 1:
        what = "no" if not matches else "more than one"
        raise LLSError(f"{what} adapter matches {adapter_id!r} under {root}; list them with "
                       "`python -m lls adapters`.")
    return AdapterInfo(matches[0].name, matches[0])


def adapter_dir(ref: str, cache_dir: Path | None = None) -> str:
    """A peft adapter directory from a path, or from a trained adapter's id (its final/)."""
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser())
    try:
        info = open_adapter(ref, cache_dir)
    except LLSError as e:
        raise LLSError(f"{ref!r} is neither an adapter directory nor a trained adapter id "
                       "(list them with `python -m lls adapters`).") from e
    if info.final_path is None:
        raise LLSError(f"Adapter {info.id} has no final/ weights yet (status {info.status}); "
                       f"pass one of its checkpoints, under {info.path / 'checkpoints'}.")
    return str(info.final_path)


def list_adapters(cache_dir: Path | None = None) -> list[AdapterInfo]:
    """All adapters, newest first."""
    root = adapters_root(cache_dir)
    if not root.is_dir():
        return []
    infos = [AdapterInfo(p.name, p) for p in root.iterdir() if (p / "manifest.json").is_file()]
    return sorted(infos, key=lambda a: a.manifest.get("created", ""), reverse=True)


def random_twin_of(adapter_id: str, cache_dir: Path | None = None) -> AdapterInfo | None:
    """The newest random-baseline adapter trained for `adapter_id` (the adapter whose
    manifest says `baseline_of: adapter_id`), if any."""
    for a in list_adapters(cache_dir):
        if a.manifest.get("baseline_of") == adapter_id:
            return a
    return None


def is_training(adapter_id: str, cache_dir: Path | None = None) -> bool:
    """True while the adapter or its random twin is queued or training."""
    twin = random_twin_of(adapter_id, cache_dir)
    return any(a is not None and a.status in ACTIVE
               for a in (open_adapter(adapter_id, cache_dir), twin))


def export_adapter(model, dst: Path) -> None:
    """Save the peft adapter to `dst` atomically (readers never see half a checkpoint)."""
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
