"""Scale-out: accelerate multi-process scoring, constant memory, and bfloat16 (GPU or CPU)."""

import json
import os
import subprocess
import sys

import pytest

from lls.core import behaviors
from lls.data.source import DataSpec
from lls.models.load import ModelSpec
from lls.scoring.runs import ScoreConfig, open_run

from conftest import HH, ROOT, bf16_device, needs_bf16

pytestmark = pytest.mark.slow  # accelerate launches and subprocesses loading models

# `--multi_gpu` is accelerate's torchrun launcher: the one that starts N local processes (with
# `--cpu`, accelerate 1.x runs ONE process unless given an MPI hostfile); without CUDA the
# ranks join a gloo process group (lls.core.distributed).
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]


def _env(cache):
    return dict(os.environ, LLS_CACHE=str(cache), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _share_models(cache):
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(os.path.join(os.environ["LLS_CACHE"], "models"))


def test_two_processes_give_the_single_process_weights(tmp_path, bundled):
    cfg = ScoreConfig(DataSpec(str(HH), limit=12), behaviors.animal("owl"),
                      max_prompt_tokens=160, chunk_size=3)
    argv = ["-m", "lls", "score", "--quiet", "--config", json.dumps(cfg.to_dict())]
    multi, single = tmp_path / "multi", tmp_path / "single"
    for c in (multi, single):
        _share_models(c)
    out = subprocess.run(ACCELERATE + ["--num_processes", "2"] + argv, env=_env(multi),
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    out = subprocess.run([sys.executable] + argv, env=_env(single), cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    key = json.loads(out.stdout.strip().splitlines()[-1])["run"]
    a, b = open_run(key, multi), open_run(key, single)
    assert a.complete and a.manifest["n_chunks"] == 4 and a.manifest["processes"] == 2
    fa, fb = a.frame(), b.frame()
    assert list(fa["id"]) == list(fb["id"]) and fa["id"].is_unique  # one score per pair
    assert (abs(fa["w"] - fb["w"]) <= 1e-5).all()


MEMORY_SCRIPT = r"""
import json, resource, sys
from lls.core import behaviors
from lls.data import DataSpec
from lls.models import ModelSpec
from lls.scoring import ScoreConfig, score
cfg = ScoreConfig(DataSpec(sys.argv[1]), behaviors.animal("owl"), model=ModelSpec(sys.argv[2]),
                  truncation=4, max_prompt_tokens=None, chunk_size=500, filter_contaminated=False)
run = score(cfg)
print(json.dumps({"pairs": run.manifest["n_pairs"],
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_memory_is_flat_in_dataset_size(tmp_path, bundled):
    from lls.scoring.synthetic import synthetic_pairs_file, tiny_model_dir

    model_dir = tiny_model_dir(tmp_path / "tiny")
    peaks = {}
    for n in (1000, 10000):  # 10x the pairs (kept small: the suite has a 20-minute budget)
        data = synthetic_pairs_file(tmp_path / f"syn{n}.jsonl", n)
        cache = tmp_path / f"cache{n}"
        _share_models(cache)
        out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(data), str(model_dir)],
                             env=_env(cache), cwd=ROOT, capture_output=True, text=True,
                             timeout=1200)
        assert out.returncode == 0, out.stderr[-3000:]
        res = json.loads(out.stdout.strip().splitlines()[-1])
        assert res["pairs"] == n
        peaks[n] = res["peak_kb"] / 1024
    # 10x the pairs: peak memory within 10% plus a small constant (20 MB)
    assert peaks[10000] <= 1.10 * peaks[1000] + 20, peaks


@pytest.mark.slow
@needs_bf16
def test_bfloat16_matches_float32(bundled, hh_pairs):
    """bfloat16 on the device with bfloat16 units (CUDA, else a CPU with avx512_bf16 / AMX)."""
    import numpy as np
    import torch

    from lls.scoring.engine import score_rendered
    from lls.models.load import load_model
    from lls.models.render import render_pair

    cpu_model, tok = bundled
    device = bf16_device()
    model, _ = load_model(ModelSpec(device=device, dtype="bfloat16"))
    assert model.lls_precision == "bfloat16"
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    owl = behaviors.animal("owl").system_prompt
    rendered = [render_pair(tok, p, owl, 32) for p in hh_pairs[:16]]
    a = np.array([s.w for s in score_rendered(cpu_model, rendered)])
    b = np.array([s.w for s in score_rendered(model, rendered, batch_tokens=32768 if
                                              device == "cuda" else 1024)])
    # documented tolerance (README, Scaling): |delta w| <= 0.02, correlation >= 0.98
    assert np.abs(a - b).max() <= 0.02
    assert np.corrcoef(a, b)[0, 1] >= 0.98
