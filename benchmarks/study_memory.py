"""The study process's resident memory across cells: a 4-cell study (γ x epochs, two
training runs) on the bundled model, peak RSS of the study process per cell.

`--keep` reproduces the earlier sampler for the baseline, in the same run: every sampled
checkpoint stays attached to one base model and the model stays loaded while children
train. Prints `peak_rss_mb` per cell for both and `growth_mb` (last cell - first cell).

    PYTHONPATH=. .venv/bin/python benchmarks/study_memory.py [--pairs 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"
# memory is about the study process: no meter read-outs (they run in the training children
# and cost most of the time), sampled read-outs only
RECIPE = {"batch_size": 2, "max_length": 96, "meter_at_checkpoints": False,
          "eval_at_checkpoints": False}
SAMPLED = {"questions": 8, "samples": 4, "seed": 0}


def _keep_adapters() -> None:
    """The earlier sampler: attach through AdapterHost, never detach, never release."""
    import lls.studies.runner as R
    from lls.models.generation import AdapterHost

    def call(self, kind, path, system=False):
        if getattr(self, "host", None) is None:
            self._load()
            self.host = AdapterHost(self.model, self.tokenizer)
        name = self.host.attach(path) if path is not None else None
        with self.host.use(name) as m:
            return R.sampled_readout(m, self.tokenizer, self.behavior, kind, self.settings,
                                     system_prompt=self.behavior.system_prompt if system
                                     else None)
    R._Sampler.__call__ = call
    R._Sampler.release = lambda self: None


def study(name: str, run_key: str, keep: bool) -> list[float]:
    if keep:
        _keep_adapters()
    from lls.studies.runner import run_study
    from lls.studies.store import create_study
    from lls.studies.config import StudyConfig

    create_study(StudyConfig(name=name, run=run_key, grid={"gamma": [0.25, 0.5],
                                                            "epochs": [1, 2]},
                             recipe=RECIPE, sampled=SAMPLED, checkpoints_per_epoch=1))
    return [r["memory"]["peak_rss_mb"] for r in run_study(name)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:  # one study in its own process, so the two modes do not share a heap
        print(json.dumps(study(a.child[0], a.child[1], a.child[0].endswith("keep"))))
        return
    os.environ.setdefault("LLS_CACHE", tempfile.mkdtemp(prefix="lls-bench-study-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lls.core import behaviors
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, score

    run = score(ScoreConfig(DataSpec(str(HH), limit=a.pairs), behaviors.animal("owl"),
                            max_prompt_tokens=128, chunk_size=8))
    out = {}
    for mode in ("flat", "keep"):  # flat trains; keep reuses its adapters
        p = subprocess.run([sys.executable, __file__, "--child", f"mem-{mode}", run.key],
                           capture_output=True, text=True, env=os.environ.copy())
        if p.returncode:
            sys.exit(p.stderr[-3000:])
        out[mode] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"{mode}: peak_rss_mb per cell {out[mode]}; growth_mb "
              f"{out[mode][-1] - out[mode][0]:+.0f}", flush=True)


if __name__ == "__main__":
    main()
