"""How scoring cost grows with the dataset: pairs/s and peak memory at 1k, 2k and 4k pairs.

Each size runs in a fresh process (so peak RSS is that run's own) on synthetic pairs, by
default with a tiny random model (the engine and data path are real; the model is small so
the run takes minutes, not hours); `--model bundled:SmolLM2-135M-Instruct` for the real one.
Time should grow linearly in pairs (pairs/s flat) and peak memory should stay flat.

    python benchmarks/score_scaling.py [--sizes 1000 2000 4000] [--model PATH]
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
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
from lls.core import behaviors
from lls.data import DataSpec
from lls.models import ModelSpec
from lls.scoring import ScoreConfig, score
cfg = ScoreConfig(DataSpec(sys.argv[1]), behaviors.animal("owl"), model=ModelSpec(sys.argv[2]),
                  chunk_size=256, filter_contaminated=False)
t = time.perf_counter()
run = score(cfg)
dt = time.perf_counter() - t
print(json.dumps({"pairs": run.manifest["n_pairs"], "seconds": dt,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--model", default=None, help="default: a tiny random model")
    args = ap.parse_args()

    from lls.core.cache import default_cache_dir
    from lls.scoring.synthetic import synthetic_pairs_file, tiny_model_dir

    work = Path(tempfile.mkdtemp(prefix="lls-scaling-"))
    model = args.model or str(tiny_model_dir(work / "tiny"))
    rows = []
    for n in args.sizes:
        data = synthetic_pairs_file(work / f"pairs{n}.jsonl", n)
        cache = work / f"cache{n}"
        cache.mkdir()
        (cache / "models").symlink_to(default_cache_dir() / "models")
        env = dict(os.environ, LLS_CACHE=str(cache), PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-c", CHILD, str(data), model], env=env,
                             cwd=ROOT, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{n:>6} pairs: {r['seconds']:8.1f} s  {r['pairs'] / r['seconds']:8.1f} pairs/s  "
              f"peak {r['peak_mb']:7.0f} MB", flush=True)
    base = rows[0]
    for n, r in zip(args.sizes[1:], rows[1:]):
        print(f"{n} vs {args.sizes[0]}: time x{r['seconds'] / base['seconds']:.2f} "
              f"(linear: x{n / args.sizes[0]:.2f}), peak memory x{r['peak_mb'] / base['peak_mb']:.3f}")


if __name__ == "__main__":
    main()
