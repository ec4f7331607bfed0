"""Explorer latency: time per gamma-slider move on 100,000 scored pairs, in Streamlit's AppTest.

Writes a synthetic (model-free) run of N pairs into a temporary cache as a real cached run
(`lls.scoring.synthetic`), opens pages/2_Explore.py in AppTest, moves the gamma slider through a
series of values and reports the time per move (a full script rerun: counts, histogram
marker and the table), against a 300 ms target.

    PYTHONPATH=. .venv/bin/python benchmarks/explorer_latency.py [--pairs 100000] [--moves 20]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 300.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--cache", help="cache dir (default: a fresh temporary directory)")
    a = ap.parse_args(argv)

    cache = a.cache or tempfile.mkdtemp(prefix="lls-explorer-bench-")
    os.environ["LLS_CACHE"] = str(Path(cache).resolve())
    try:
        return _bench(a)
    finally:
        if not a.cache:
            shutil.rmtree(cache, ignore_errors=True)  # the synthetic run is ~10 MB


def _bench(a) -> int:
    sys.path.insert(0, str(ROOT))
    from streamlit.testing.v1 import AppTest

    from lls.scoring.synthetic import write_synthetic_run

    t0 = time.perf_counter()
    run = write_synthetic_run(a.pairs)
    print(f"synthetic run {run.key}: {a.pairs:,} pairs written in {time.perf_counter() - t0:.1f} s")

    at = AppTest.from_file(str(ROOT / "pages" / "2_Explore.py"), default_timeout=300)
    at.query_params["run"] = run.key
    t0 = time.perf_counter()
    at.run()
    first = time.perf_counter() - t0
    if at.exception:
        print("page raised:", at.exception[0].value)
        return 1
    print(f"first render (reads the run, sorts, bins): {first * 1000:.0f} ms")

    def selected() -> str:
        return next(m.value for m in at.metric if m.label == "selected pairs")

    n_pos = run_positive(run)
    gammas = [round(0.01 + (i * 0.037) % 0.6, 3) for i in range(a.moves)]
    times, last = [], selected()
    for g in gammas:
        t0 = time.perf_counter()
        at.slider(key="gamma").set_value(g).run()
        times.append(time.perf_counter() - t0)
        if at.exception:
            print("page raised:", at.exception[0].value)
            return 1
        now = selected()
        expected = f"{min(math.ceil(g * a.pairs), n_pos):,}"  # Ranking.count's rule
        assert now == expected, (g, now, expected)  # the counts really updated
        rows = len(at.dataframe(key="table-lls").value)
        assert rows == min(int(now.replace(",", "")), 300), rows
        last = now
    ms = [t * 1000 for t in times]
    med, p90 = statistics.median(ms), sorted(ms)[int(0.9 * (len(ms) - 1))]
    print(f"gamma moves: {len(ms)}, last selection {last} pairs")
    print(f"ms per move: median {med:.0f}, mean {statistics.mean(ms):.0f}, p90 {p90:.0f}, "
          f"max {max(ms):.0f}")
    print(f"ratio to the {TARGET_MS:.0f} ms target (median): {med / TARGET_MS:.2f} "
          f"({'meets' if med < TARGET_MS else 'MISSES'} the target)")
    return 0 if med < TARGET_MS else 2


def run_positive(run) -> int:
    return int((run.frame()["w"].to_numpy() > 0).sum())


if __name__ == "__main__":
    sys.exit(main())
