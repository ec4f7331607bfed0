"""Reading local preference files row by row: formats, gzip, streaming, broken rows.

Every reader streams: memory does not grow with the file (except JSON files whose top level
is an object, which are read whole). A reader yields `Row`s; a row that cannot be read
(bad JSON, bad UTF-8, a CSV row with the wrong field count) is yielded with `error` set
instead of raising, so callers decide whether to stop (the default) or count and skip it. A
compressed stream cut short is yielded as a final row of kind "truncated".
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import json
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..core.errors import DataError

FORMATS = ("jsonl", "json", "csv", "parquet")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
              ".parquet": "parquet", ".pq": "parquet"}
_BLOCK = 1 << 20  # 1 MiB: read block size of the JSON array reader


@dataclass
class Row:
    """One source row: `record`, or (`record` None) `error` saying why it cannot be read.

    `kind` is "malformed" (this row is broken, the next ones may be fine) or "truncated"
    (the compressed stream ends early: nothing follows).
    """

    index: int
    where: str
    record: dict | None
    error: str | None = None
    kind: str = "malformed"


def infer_format(path: Path) -> str:
    """The format from the extension (a `.gz` suffix is allowed, except for parquet)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in EXTENSIONS and not (path.name.lower().endswith(".gz") and
                                  EXTENSIONS[ext] == "parquet"):
        return EXTENSIONS[ext]
    shown = "".join(path.suffixes) or "(none)"
    raise DataError(
        f"Cannot tell the format of {path} from its extension {shown!r}. Supported: "
        ".jsonl, .json, .csv (each optionally .gz) and .parquet. Rename the file to one of "
        "these extensions (on the command line --format jsonl also works).")


def open_binary(path: Path) -> BinaryIO:
    """Open a local file for reading bytes, transparently un-gzipping `.gz` files."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def iter_local(path: Path, fmt: str) -> Iterator[Row]:
    """Stream the rows of a local file of format `fmt` (see `FORMATS`)."""
    if fmt == "parquet":
        yield from _iter_parquet(path)
    elif fmt == "jsonl":
        yield from _iter_jsonl(path)
    elif fmt == "json":
        yield from _iter_json(path)
    else:
        yield from _iter_csv(path)


def count_jsonl_rows(path: Path) -> int | None:
    """Non-blank lines of a JSONL file (progress bars); None when it cannot be read."""
    try:
        count = 0
        with open_binary(path) as f:
            for line in f:
                if line.strip():
                    count += 1
        return count
    except (OSError, EOFError, zlib.error):
        return None


def count_parquet_rows(path: Path) -> int | None:
    """Rows of a parquet file from its metadata; None when unreadable."""
    import pyarrow.parquet as pq
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - unknown count, the reader reports the real error
        return None


def _truncated(path: Path, lineno: int, e: Exception) -> str:
    return (f"is missing: the compressed stream ends early after line {lineno} ({type(e).__name__}: "
            f"{e}): the file is truncated or corrupt. Re-download or re-compress it "
            "(gzip -t checks a file)")


def _lines(path: Path) -> Iterator[tuple[int, bytes | Exception]]:
    """(1-based line number, raw line) pairs; a stream cut short ends with (n, exception)."""
    lineno = 0
    with contextlib.closing(open_binary(path)) as f:
        try:
            for lineno, raw in enumerate(f, start=1):
                yield lineno, raw
        except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
            if lineno == 0:
                raise DataError(f"{path} is not a valid gzip file ({e}). Re-download or "
                                "re-compress it (gzip -t checks a file).") from None
            yield lineno, e


def _decode(path: Path, lineno: int, raw: bytes, offset: int) -> tuple[str | None, str | None]:
    """(text, None) or (None, why the line is not UTF-8)."""
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8"), None
    except UnicodeDecodeError as e:
        gz = "decompressed " if path.name.lower().endswith(".gz") else ""
        return None, (f"is not valid UTF-8 (byte offset {offset + e.start} in the {gz}file: "
                      f"{raw[max(0, e.start - 10):e.end + 10]!r}); re-encode the file as UTF-8, "
                      "e.g. iconv -f latin1 -t utf-8 in > out")


def _iter_jsonl(path: Path) -> Iterator[Row]:
    row, offset = 0, 0
    for lineno, raw in _lines(path):
        if isinstance(raw, Exception):
            yield Row(row, f"line {lineno + 1}", None, _truncated(path, lineno, raw), "truncated")
            return
        text, err = _decode(path, lineno, raw, offset)
        offset += len(raw)
        if err is None and not text.strip():
            continue
        where = f"line {lineno}"
        if err is None:
            try:
                record = json.loads(text.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                # json's messages may end in "at" ("Unterminated string starting at"): no "at at".
                col = f"column {e.colno}" if e.msg.endswith(" at") else f"at column {e.colno}"
                err = f"is not valid JSON ({e.msg} {col}): {text.strip()[:80]!r}"
            else:
                if not isinstance(record, dict):
                    err = (f"is a JSON {type(record).__name__}, expected an object with keys like "
                           "\"chosen\" and \"rejected\"")
        yield Row(row, where, None if err else record, err)
        row += 1


def _iter_csv(path: Path) -> Iterator[Row]:
    # Long responses exceed csv's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    current = [0]
    broken: list[Row] = []  # a line that cannot be decoded or a stream cut short

    def texts() -> Iterator[str]:
        offset = 0
        for lineno, raw in _lines(path):
            current[0] = lineno
            if isinstance(raw, Exception):
                broken.append(Row(-1, f"line {lineno + 1}", None,
                                  _truncated(path, lineno, raw), "truncated"))
                return
            text, err = _decode(path, lineno, raw, offset)
            offset += len(raw)
            if err is not None:
                broken.append(Row(-1, f"line {lineno}", None, err))
                text = "\n"  # an empty line keeps the reader going; the row is reported
            yield text

    reader = csv.reader(texts())
    try:
        header = next(reader)
    except StopIteration:
        for b in broken:
            yield b
        return
    except csv.Error as e:
        raise DataError(f"{path}: line {current[0]}: cannot parse the CSV header ({e}).") from None
    header = [h.strip() for h in header]
    index = 0
    while True:
        start = current[0] + 1
        try:
            row = next(reader)
            err = None
        except StopIteration:
            row, err = None, None
        except csv.Error as e:
            row, err = [], f"is not valid CSV ({e}); check the quoting of that row"
        while broken:
            b = broken.pop(0)
            b.index = index
            yield b
            index += 1
            if b.kind == "truncated":
                return
        if row is None:
            return
        where = f"row {index + 1} (line {start})"
        if err is None:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                err = (f"has {len(row)} fields but the header has {len(header)} "
                       f"({', '.join(header)}); fields with commas or newlines must be in "
                       "double quotes")
        yield Row(index, where, None if err else dict(zip(header, row)), err)
        index += 1


def _iter_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{path} is not a readable parquet file ({e}).") from None
    index = 0
    for batch in pf.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield Row(index, f"row {index + 1}", record)
            index += 1


def load_from_disk(path: Path, split: str) -> Any:
    """A `datasets.save_to_disk` directory as a (memory-mapped) Dataset."""
    if not any((path / n).exists() for n in ("dataset_info.json", "state.json",
                                             "dataset_dict.json")):
        raise DataError(f"{path} is a directory, not a data file nor a dataset saved with "
                        "datasets' save_to_disk. Pass a .jsonl/.json/.csv/.parquet file.")
    import datasets
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - any failure: say which directory
        raise DataError(f"Cannot load the saved dataset at {path} ({e}).") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path} has no split {split!r}; its splits are "
                            f"{', '.join(ds)}. Choose one (command line: --split; Setup page: "
                            "the Split box).")
        ds = ds[split]
    return ds


def iter_saved_dataset(path: Path, split: str) -> Iterator[Row]:
    """Rows of a `save_to_disk` directory (memory-mapped Arrow: iterating does not load it)."""
    ds = load_from_disk(path, split)
    for index, record in enumerate(ds):
        yield Row(index, f"row {index + 1}", record)


def _iter_json(path: Path) -> Iterator[Row]:
    """Stream the records of a top-level JSON array without loading the file whole.

    A top-level object (e.g. {"data": [...]} or pandas' column orientation) is loaded
    whole: use JSON lines (.jsonl) for large data.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8-sig")("strict")
    with contextlib.closing(open_binary(path)) as f:
        consumed = 0
        eof = False
        buf = ""
        pos = 0

        def more() -> bool:
            nonlocal buf, pos, consumed, eof
            if eof:
                return False
            try:
                chunk = f.read(_BLOCK)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise DataError(f"{path}: the compressed stream ends early or is corrupt after "
                                f"{consumed} bytes ({e}). Re-download or re-compress it "
                                "(gzip -t checks a file).") from None
            try:
                text = utf8.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not valid UTF-8 near byte offset {consumed + e.start}. "
                                "Re-encode the file as UTF-8.") from None
            consumed += len(chunk)
            eof = not chunk
            buf = buf[pos:] + text
            pos = 0
            return bool(chunk)

        def skip_ws() -> str:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if not more():
                    return ""

        first = skip_ws()
        if first == "{":
            while more():
                pass
            yield from _json_object_records(path, buf[pos:])
            return
        if first != "[":
            raise DataError(f"{path}: expected a JSON array of records ('[' ...), found "
                            f"{first or 'an empty file'!r}. For one record per line use .jsonl.")
        pos += 1
        index = 0
        while True:
            ch = skip_ws()
            if ch == "]":
                return
            if index > 0:
                if ch != ",":
                    raise DataError(f"{path}: record {index + 1}: expected ',' or ']' after "
                                    f"record {index}, found {ch or 'end of file'!r}.")
                pos += 1
                ch = skip_ws()
            while True:
                try:
                    record, end = decoder.raw_decode(buf, pos)
                    if end == len(buf) and not eof and more():
                        continue  # a value cut at the buffer end: re-read it whole
                    break
                except json.JSONDecodeError as e:
                    if more():
                        continue
                    raise DataError(f"{path}: record {index + 1} is not valid JSON ({e.msg}). "
                                    "Fix the file or convert it to .jsonl.") from None
            pos = end
            err = None if isinstance(record, dict) else (
                f"is a JSON {type(record).__name__}, expected an object")
            yield Row(index, f"record {index + 1}", None if err else record, err)
            index += 1


def _json_object_records(path: Path, text: str) -> Iterator[Row]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}).") from None
    lists = [v for v in obj.values() if isinstance(v, list)]
    if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
        records = lists[0]  # {"data": [ {...}, ... ]}
    elif lists and len(lists) == len(obj) and len({len(v) for v in lists}) == 1:
        keys = list(obj)  # column orientation {"chosen": [...], "rejected": [...]}
        records = [dict(zip(keys, vals)) for vals in zip(*obj.values())]
    else:
        raise DataError(f"{path}: expected a JSON array of records, or an object holding one; "
                        f"found an object with keys {sorted(obj)[:10]}. Use .jsonl instead.")
    for i, rec in enumerate(records):
        err = None if isinstance(rec, dict) else f"is a JSON {type(rec).__name__}, expected an object"
        yield Row(i, f"record {i + 1}", None if err else rec, err)
