"""Tests for lls.data: readers, shapes, hygiene and error messages (offline, fast)."""

from __future__ import annotations

import csv
import gzip
import json
import time
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lls.data.source as data
import lls.data.readers as readers
from lls.data.source import (DataSpec, HygieneReport, count_raw_rows, iter_pairs, load_pairs,
                      preview)
from lls.core.errors import DataError
from lls.core.pair import Pair

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH = SHARED / "hh_rlhf_harmless_base_test.jsonl.gz"
ORCA = SHARED / "orca_dpo_pairs_sample.csv"

ROWS = [
    {"system": "", "prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
    {"system": "Be terse.", "prompt": "Say \"hi\",\nplease", "chosen": "hi,\nthere",
     "rejected": "no"},
    {"system": "", "prompt": "Name a colour", "chosen": "Blue", "rejected": "Ünïcödé 😀"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


# -- real data ------------------------------------------------------------------------------

def test_hh_rlhf_loads_and_reports_hygiene():
    pairs, report = load_pairs(DataSpec(str(HH)))
    assert report.read == 2312
    assert report.dropped.get("different_prompts") == 5
    assert report.dropped.get("empty") == 4
    assert report.dropped.get("identical", 0) == 0
    assert report.kept == len(pairs) == 2312 - 9
    assert "read 2312, kept 2303" in report.summary()
    assert "different_prompts 5" in report.summary()
    assert len(report.examples["different_prompts"]) == 5
    assert report.to_dict()["dropped"] == report.dropped
    assert all(p.source == HH.name for p in pairs)
    assert pairs[0].id == f"{HH.name}:0"
    multi = [p for p in pairs if len(p.prompt) >= 5]
    assert multi, "hh-rlhf has multi-turn prompts"
    for p in pairs:
        roles = [m["role"] for m in p.prompt]
        assert roles[-1] == "user" and roles[0] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:])), roles
        assert p.chosen == p.chosen.strip() and p.chosen
    first = pairs[0]
    assert first.prompt[0] == {"role": "user",
                               "content": "what are some pranks with a pen i can do?"}
    assert first.chosen.startswith("No, sorry!")
    single = sum(len(p.prompt) == 1 for p in pairs)
    assert 600 < single < 700  # README: 661 of the 2,312 raw pairs are single-turn


def test_orca_csv_loads_with_system_turn():
    pairs, report = load_pairs(DataSpec(str(ORCA)))
    assert report.read == 100 and report.kept == 100
    with open(ORCA, newline="", encoding="utf-8") as f:
        raw = list(csv.DictReader(f))
    for p, r in zip(pairs, raw):
        if r["system"].strip():
            assert p.prompt[0] == {"role": "system", "content": r["system"]}
            assert p.prompt[1] == {"role": "user", "content": r["question"]}
        else:
            assert p.prompt == [{"role": "user", "content": r["question"]}]
        assert p.chosen == r["chosen"] and p.rejected == r["rejected"]
    assert sum(p.prompt[0]["role"] == "system" for p in pairs) == sum(
        bool(r["system"].strip()) for r in raw)


def test_preview_limit_and_counts():
    assert len(preview(DataSpec(str(HH)), n=3)) == 3
    report = HygieneReport()
    got = list(iter_pairs(DataSpec(str(HH), limit=7), report=report))
    assert len(got) == 7 and report.kept == 7 and report.read == 7
    assert count_raw_rows(DataSpec(str(HH))) == 2312
    assert count_raw_rows(DataSpec(str(ORCA))) is None


def test_fingerprint_tracks_content_and_spec(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ROWS)
    fp = DataSpec(str(a)).fingerprint()
    assert len(fp) == 16 and fp == DataSpec(str(a)).fingerprint()
    assert DataSpec(str(a), limit=2).fingerprint() != fp
    write_jsonl(a, ROWS[:2])
    assert DataSpec(str(a)).fingerprint() != fp
    hub = DataSpec("Anthropic/hh-rlhf", subset="harmless-base", split="test")
    assert hub.is_hub() and hub.fingerprint() != DataSpec("Anthropic/hh-rlhf").fingerprint()


# -- formats ------------------------------------------------------------------------------

def test_formats_round_trip_to_the_same_pairs(tmp_path):
    files = [
        write_jsonl(tmp_path / "d.jsonl", ROWS),
        write_jsonl(tmp_path / "d.jsonl.gz", ROWS),
        write_csv(tmp_path / "d.csv", ROWS),
        write_csv(tmp_path / "d.csv.gz", ROWS),
    ]
    (tmp_path / "d.json").write_text(json.dumps(ROWS, ensure_ascii=False, indent=2),
                                     encoding="utf-8")
    with gzip.open(tmp_path / "d.json.gz", "wt", encoding="utf-8") as f:
        json.dump(ROWS, f)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    files += [tmp_path / "d.json", tmp_path / "d.json.gz", tmp_path / "d.parquet"]

    def content(path: Path) -> list[tuple]:
        return [(p.prompt, p.chosen, p.rejected) for p in load_pairs(DataSpec(str(path)))[0]]

    expected = content(files[0])
    assert len(expected) == 3
    assert expected[1][0] == [{"role": "system", "content": "Be terse."},
                              {"role": "user", "content": "Say \"hi\",\nplease"}]
    for path in files[1:]:
        assert content(path) == expected, path.name
        assert load_pairs(DataSpec(str(path)))[0][2].id == f"{path.name}:2"
    assert count_raw_rows(DataSpec(str(tmp_path / "d.parquet"))) == 3


def test_json_streaming_over_many_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_BLOCK", 64)  # force records to straddle read blocks
    rows = [{"prompt": f"q{i} " + "x" * (i % 50), "chosen": f"yes {i}", "rejected": "no"}
            for i in range(300)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    pairs, report = load_pairs(DataSpec(str(path)))
    assert report.read == 300 and [p.chosen for p in pairs] == [r["chosen"] for r in rows]


def test_json_object_of_records(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    assert len(load_pairs(DataSpec(str(path)))[0]) == 3


def test_save_to_disk_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    pairs, report = load_pairs(DataSpec(str(tmp_path / "saved")))
    assert report.kept == 3 and pairs[0].chosen == "4"


def test_explicit_format_overrides_extension(tmp_path):
    path = write_jsonl(tmp_path / "data.txt", ROWS)
    assert len(load_pairs(DataSpec(str(path), format="jsonl"))[0]) == 3


# -- shapes -------------------------------------------------------------------------------

def test_explicit_column_mapping(tmp_path):
    rows = [{"uid": "a1", "instruction": "Q?", "good": "yes", "bad": "no", "sys": "S"}]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    spec = DataSpec(str(path), columns={"prompt": "instruction", "chosen": "good",
                                        "rejected": "bad", "system": "sys", "id": "uid"})
    (pair,), _ = load_pairs(spec)
    assert pair == Pair(id="a1", prompt=[{"role": "system", "content": "S"},
                                         {"role": "user", "content": "Q?"}],
                        chosen="yes", rejected="no", source="m.jsonl")


def test_messages_shape_tulu_and_ultrafeedback(tmp_path):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Capital of France?"}]
    rows = [
        # tulu 2.5 style: the lists hold the whole conversation
        {"id": "t1", "chosen": conv + [{"role": "assistant", "content": "Paris"}],
         "rejected": conv + [{"role": "assistant", "content": "Lyon"}]},
        # ultrafeedback_binarized style: prompt string + lists including the prompt
        {"id": "u1", "prompt": "Q", "chosen": [{"role": "user", "content": "Q"},
                                               {"role": "assistant", "content": "A"}],
         "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}]},
        # lists that disagree on the prompt
        {"id": "d1", "chosen": [{"role": "user", "content": "X"},
                                {"role": "assistant", "content": "A"}],
         "rejected": [{"role": "user", "content": "Y"}, {"role": "assistant", "content": "B"}]},
    ]
    path = write_jsonl(tmp_path / "msgs.jsonl", rows)
    pairs, report = load_pairs(DataSpec(str(path)))
    assert [p.id for p in pairs] == ["t1", "u1"]
    assert pairs[0].prompt == conv and pairs[0].chosen == "Paris"
    assert pairs[1].prompt == [{"role": "user", "content": "Q"}] and pairs[1].rejected == "B"
    assert report.dropped == {"different_prompts": 1}
    assert report.examples["different_prompts"] == ["d1"]

    # The same as parquet with the lists stored as JSON strings.
    flat = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()}
            for r in rows[:1]]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "msgs.parquet")
    (p,), _ = load_pairs(DataSpec(str(tmp_path / "msgs.parquet"), shape="messages"))
    assert p.prompt == conv and p.chosen == "Paris"


def test_hygiene_identical_empty_too_long_filtered(tmp_path):
    rows = [
        {"prompt": "ok", "chosen": "a", "rejected": "b"},
        {"prompt": "same", "chosen": " same answer ", "rejected": "same answer"},
        {"prompt": "", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "", "rejected": "b"},
        {"prompt": "one two three four five six", "chosen": "a", "rejected": "b"},
        {"prompt": "tell me about owls", "chosen": "a", "rejected": "b"},
    ]
    path = write_jsonl(tmp_path / "h.jsonl", rows)

    class WordTokenizer:  # no chat template: the contents' tokens are counted
        def encode(self, text, add_special_tokens=False):
            return text.split()

    report = HygieneReport()
    pairs = list(iter_pairs(DataSpec(str(path)), report=report, max_prompt_tokens=5,
                            tokenizer=WordTokenizer(),
                            exclude=lambda p: "owl" in p.prompt[-1]["content"]))
    assert [p.chosen for p in pairs] == ["a"]
    assert report.dropped == {"identical": 1, "empty": 2, "prompt_too_long": 1, "filtered": 1}
    assert report.read == 6 and report.kept == 1
    assert report.examples["empty"] == ["h.jsonl:2", "h.jsonl:3"]
    with pytest.raises(DataError, match="tokenizer"):
        list(iter_pairs(DataSpec(str(path)), max_prompt_tokens=5))


def test_laziness_reads_only_what_is_needed(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"prompt": "p" * 50, "chosen": "c", "rejected": "r"}) + "\n"
    with open(path, "w") as f:
        f.writelines(line for _ in range(200_000))
    size = path.stat().st_size
    lines_read = []

    class CountingFile:
        def __init__(self, f):
            self.f = f

        def __iter__(self):
            for raw in self.f:
                lines_read.append(1)
                yield raw

        def close(self):
            self.f.close()

    real_open = readers.open_binary
    monkeypatch.setattr(readers, "open_binary", lambda p: CountingFile(real_open(p)))
    report = HygieneReport()
    first = list(islice(iter_pairs(DataSpec(str(path)), report=report), 10))
    assert len(first) == 10
    assert len(lines_read) == 10 and report.read == 10
    assert len(line) * 10 < size / 1000
    monkeypatch.setattr(readers, "open_binary", real_open)
    assert count_raw_rows(DataSpec(str(path))) == 200_000


# -- bad input ----------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="does not exist") as e:
        list(iter_pairs(DataSpec(str(path))))
    assert str(path.resolve()) in str(e.value)


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(DataError) as e:
        list(iter_pairs(DataSpec(str(path))))
    msg = str(e.value)
    assert ".xlsx" in msg and ".jsonl" in msg and "--format" in msg
    with pytest.raises(DataError, match="Unknown format"):
        DataSpec(str(path), format="xlsx")


def test_missing_columns(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"question": "q", "good": "a", "bad": "b"}])
    with pytest.raises(DataError) as e:
        list(iter_pairs(DataSpec(str(path))))
    msg = str(e.value)
    assert "question, good, bad" in msg and "chosen" in msg and "rejected" in msg
    # Interface-neutral: the CLI flag and the Setup page control, no library call.
    assert "Map your columns" in msg and "--columns chosen=" in msg and "DataSpec" not in msg
    path2 = write_jsonl(tmp_path / "c2.jsonl", [{"chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="prompt='instruction'"):
        list(iter_pairs(DataSpec(str(path2), columns={"prompt": "instruction"})))


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(ROWS[0])
    path.write_text(f"{good}\n{good}\n{{\"prompt\": \"x\", oops}}\n{good}\n")
    with pytest.raises(DataError) as e:
        list(iter_pairs(DataSpec(str(path))))
    assert "line 3" in str(e.value) and "not valid JSON" in str(e.value)
    report = HygieneReport()
    pairs = list(iter_pairs(DataSpec(str(path)), report=report, skip_malformed=True))
    assert len(pairs) == 3 and report.dropped == {"malformed": 1} and report.read == 4


def test_malformed_row_type_names_the_row(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [ROWS[0], {"prompt": "q", "chosen": 3,
                                                        "rejected": "b"}])
    with pytest.raises(DataError, match="line 2.*chosen must be a string"):
        list(iter_pairs(DataSpec(str(path))))


def test_invalid_utf8(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" +
                     '{"prompt": "caf\u00e9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as e:
        list(iter_pairs(DataSpec(str(path))))
    msg = str(e.value)
    assert "line 2" in msg and "UTF-8" in msg and "byte offset" in msg and str(path) in msg
    csv_path = tmp_path / "latin.csv"
    csv_path.write_bytes("prompt,chosen,rejected\nq,a,b\ncaf\u00e9,a,b\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 3.*UTF-8"):
        list(iter_pairs(DataSpec(str(csv_path))))


def test_csv_row_with_wrong_field_count(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("prompt,chosen,rejected\nq,a,b\nq,a\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\) has 2 fields"):
        list(iter_pairs(DataSpec(str(path))))


def test_empty_result(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "q", "chosen": "x", "rejected": "x"}] * 3)
    with pytest.raises(DataError) as e:
        list(iter_pairs(DataSpec(str(path))))
    assert "read 3 rows" in str(e.value) and "identical 3" in str(e.value)
    (tmp_path / "none.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        list(iter_pairs(DataSpec(str(tmp_path / "none.jsonl"))))


def test_corrupt_gzip(tmp_path):
    good = gzip.compress((json.dumps(ROWS[0]) + "\n").encode() * 2000)
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="gzip"):
        list(iter_pairs(DataSpec(str(truncated))))
    garbage = tmp_path / "junk.csv.gz"
    garbage.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="gzip"):
        list(iter_pairs(DataSpec(str(garbage))))


def test_hub_offline_fails_fast_with_local_file_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = DataSpec("Anthropic/hh-rlhf", subset="harmless-base", split="test")
    assert spec.is_hub()
    start = time.monotonic()
    with pytest.raises(DataError) as e:
        list(iter_pairs(spec))
    assert time.monotonic() - start < 15  # no network retries
    msg = str(e.value)
    assert "Anthropic/hh-rlhf" in msg and "--data path/to/file.jsonl" in msg


def test_hub_presets_and_names():
    assert DataSpec("HuggingFaceH4/ultrafeedback_binarized").resolved_split() == "train_prefs"
    assert DataSpec("Intel/orca_dpo_pairs").resolved_split() == "train"
    assert data.HUB_PRESETS["Anthropic/hh-rlhf"].shape == "transcript"
    assert data.HUB_PRESETS["allenai/tulu-2.5-preference-data"].shape == "messages"
    assert not DataSpec("data/file.jsonl").is_hub()
    assert DataSpec("allenai/tulu-2.5-preference-data").is_hub()
