"""Peak memory of the validation pass (lls.data.validate) against reading the file whole.

Writes a JSONL file of N synthetic pairs (gzipped with --gz) to a temporary directory, then
measures with tracemalloc, in the same run: the peak of `validate_source` over the whole file
(streaming), and, as the baseline, the peak of reading the file whole and parsing every line
(what a non-streaming check would hold). Prints both and `ratio` = baseline / pass: a streaming
pass stays flat in the file size, so the ratio grows with N.

    python benchmarks/validate_memory.py [--rows 100000] [--gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lls.data.source import DataSpec  # noqa: E402
from lls.data.readers import open_binary  # noqa: E402
from lls.scoring.synthetic import synthetic_pairs_file  # noqa: E402
from lls.data.validate import validate_source  # noqa: E402


def peak_of(fn) -> tuple[float, object, float]:
    """(peak MiB allocated while fn runs, its result, seconds)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, out, dt


def read_whole(path: Path) -> int:
    """The baseline: the file read into memory and every line parsed, all kept."""
    with open_binary(path) as f:
        text = f.read().decode("utf-8")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return len(records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--gz", action="store_true", help="gzip the file (.jsonl.gz)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_pairs_file(Path(tmp) / "pairs.jsonl", a.rows)
        if a.gz:
            gz = path.with_suffix(".jsonl.gz")
            with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
                dst.writelines(src)
            path.unlink()
            path = gz
        size = path.stat().st_size / 2**20
        base, n_whole, t_whole = peak_of(lambda: read_whole(path))
        peak, report, t_pass = peak_of(lambda: validate_source(DataSpec(str(path))))
        assert report.ok and report.rows == n_whole == a.rows, report.summary()
        print(json.dumps({"rows": a.rows, "file_mib": round(size, 1),
                          "pass_peak_mib": round(peak, 2), "pass_s": round(t_pass, 2),
                          "whole_peak_mib": round(base, 1), "whole_s": round(t_whole, 2),
                          "ratio": round(base / peak, 1)}))


if __name__ == "__main__":
    main()
