"""The validation pass (lls.data.validate) and the data problems it must catch, library side.

Every file is written by the test into a temporary directory.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from lls.data.source import DataSpec, iter_pairs, load_pairs
from lls.core.errors import DataError
from lls.data.validate import validate_source


def good(i: int) -> dict:
    return {"prompt": f"question {i}?", "chosen": f"good answer {i}", "rejected": f"bad {i}"}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def truncated_gz(path: Path, n: int = 3000) -> Path:
    data = gzip.compress("".join(json.dumps(good(i)) + "\n" for i in range(n)).encode())
    path.write_bytes(data[: len(data) // 2])
    return path


def test_bad_line_found_with_position(tmp_path):
    lines = [json.dumps(good(i)) for i in range(40)]
    lines[17] = '{"prompt": "x", "chosen": "cut'  # line 18
    lines[29] = '[1, 2]'  # line 30: JSON but not an object
    path = write_lines(tmp_path / "bad.jsonl", lines)
    r = validate_source(DataSpec(str(path), limit=5))  # the limit does not shorten the pass
    assert (r.rows, r.usable, r.malformed) == (40, 38, 2) and not r.ok
    assert r.positions[0].startswith("line 18 is not valid JSON")
    assert r.positions[1].startswith("line 30 is a JSON list")
    assert "at at" not in r.positions[0]
    assert "malformed 2 (line 18, line 30)" in r.summary()
    with pytest.raises(DataError) as e:
        r.raise_if_bad()
    msg = str(e.value)
    assert "line 18" in msg and "line 30" in msg and "--skip-malformed" in msg
    assert "skip_malformed=True" not in msg
    d = r.to_dict()
    assert d["ok"] is False and d["malformed"] == 2 and d["summary"] == r.summary()
    # Skipping makes it ok, and the hygiene report counts the skipped rows.
    r2 = validate_source(DataSpec(str(path), skip_malformed=True))
    assert r2.ok and r2.problem() is None and "2 malformed rows will be skipped" in r2.warnings[0]
    pairs, rep = load_pairs(DataSpec(str(path), skip_malformed=True))
    assert len(pairs) == 38 and rep.dropped["malformed"] == 2 and rep.read == 40


def test_bad_line_error_advises_the_flag(tmp_path):
    lines = [json.dumps(good(i)) for i in range(5)]
    lines[2] = '{"a": "Unterminated'
    path = write_lines(tmp_path / "b.jsonl", lines)
    with pytest.raises(DataError) as e:
        list(iter_pairs(DataSpec(str(path))))
    msg = str(e.value)
    assert "line 3 is not valid JSON" in msg and "--skip-malformed" in msg
    assert "(Unterminated string starting at column 7)" in msg, msg


def test_missing_and_empty_fields(tmp_path):
    rows = [good(i) for i in range(6)]
    rows[1] = {"prompt": "q", "chosen": "a"}  # rejected missing
    rows[2] = {"prompt": "q", "chosen": "", "rejected": "b"}  # empty: a hygiene drop
    rows[3] = {"prompt": "q", "chosen": 3, "rejected": "b"}  # wrong type
    path = write_lines(tmp_path / "f.jsonl", [json.dumps(r) for r in rows])
    r = validate_source(DataSpec(str(path)))
    assert r.rows == 6 and r.malformed == 2 and r.dropped["empty"] == 1 and r.usable == 3
    assert r.positions[0].startswith("line 2: missing column 'rejected'")
    assert r.positions[1].startswith("line 4: chosen must be a string")


def test_truncated_gzip_is_an_error_or_a_loud_warning(tmp_path):
    path = truncated_gz(tmp_path / "t.jsonl.gz")
    r = validate_source(DataSpec(str(path), limit=20))
    assert r.truncated and not r.ok and r.rows > 0 and "TRUNCATED" in r.summary()
    assert f"after line {r.rows}" in r.problem() and "--skip-malformed" in r.problem()
    # Reading past the cut without the skip is an error naming the position, never a silent end.
    with pytest.raises(DataError, match=f"after line {r.rows}"):
        list(iter_pairs(DataSpec(str(path))))
    r2 = validate_source(DataSpec(str(path), skip_malformed=True))
    assert r2.ok and any(w.startswith("TRUNCATED") for w in r2.warnings)
    pairs, rep = load_pairs(DataSpec(str(path), skip_malformed=True))
    assert len(pairs) == r.rows and rep.dropped["truncated"] == 1 and rep.warnings


def test_non_utf8_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(good(0)).encode() + b"\n" +
                     '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}'.encode("latin-1")
                     + b"\n" + json.dumps(good(2)).encode() + b"\n")
    r = validate_source(DataSpec(str(path)))
    assert r.rows == 3 and r.malformed == 1 and r.positions[0].startswith("line 2 is not valid UTF-8")
    assert "iconv" in r.problem()


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    r = validate_source(DataSpec(str(empty)))
    assert r.rows == 0 and not r.ok and "contains no rows" in r.problem()
    header = tmp_path / "h.csv"
    header.write_text("prompt,chosen,rejected\n")
    r = validate_source(DataSpec(str(header)))
    assert r.rows == 0 and not r.ok and "contains no rows" in r.problem()


def test_bad_csv_row_position(tmp_path):
    path = tmp_path / "c.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "chosen", "rejected"])
        w.writerow(["q1", "a", "b"])
        f.write("q2,only two\n")
        w.writerow(["q3", "a", "b"])
    r = validate_source(DataSpec(str(path)))
    assert r.rows == 3 and r.malformed == 1
    assert r.positions[0].startswith("row 2 (line 3) has 2 fields")


def test_all_identical_advice_fits_the_cause(tmp_path):
    path = write_lines(tmp_path / "same.jsonl",
                       [json.dumps({"prompt": f"q{i}", "chosen": "x", "rejected": "x"})
                        for i in range(3)])
    r = validate_source(DataSpec(str(path)))
    assert r.usable == 0 and r.dropped == {"identical": 3}
    assert "two different responses" in r.problem() and "filter words" not in r.problem()
    with pytest.raises(DataError) as e:
        list(iter_pairs(DataSpec(str(path))))
    msg = str(e.value)
    assert "read 3 rows" in msg and "two different responses" in msg
    assert "filter words" not in msg


def test_read_one_row_is_singular(tmp_path):
    path = write_lines(tmp_path / "one.jsonl", [json.dumps({"prompt": "q", "chosen": "x",
                                                            "rejected": "x"})])
    with pytest.raises(DataError) as e:
        list(iter_pairs(DataSpec(str(path))))
    assert "read 1 row," in str(e.value) and "1 rows" not in str(e.value)


def test_missing_file_is_reported_not_raised(tmp_path):
    r = validate_source(DataSpec(str(tmp_path / "nope.jsonl")))
    assert not r.ok and "does not exist" in r.error and r.problem() == r.error
