"""The data stage: read preference data (local files or the Hugging Face Hub) into `Pair`s.

Everything here is lazy: `iter_pairs` is a generator over the source, so memory does not
grow with the dataset size (except JSON files whose top level is an object, see
`_iter_json`). Rows that are unusable for LLS are counted in a `HygieneReport` instead of
crashing the run; rows that are broken (bad JSON, wrong types) raise a `DataError` naming
the file and line, unless the caller passes `skip_malformed=True`.

Three record shapes are understood:

* ``transcript``  HH-style: ``chosen``/``rejected`` are whole conversations with turns
  introduced by ``"\\n\\nHuman: "`` and ``"\\n\\nAssistant: "`` (Anthropic/hh-rlhf).
* ``messages``    ``chosen``/``rejected`` are chat message lists that include the prompt
  turns (tulu 2.5, ultrafeedback_binarized); an optional ``prompt`` column is used when the
  lists hold only the answer.
* ``columns``     plain string columns ``prompt`` (or ``question``), optional ``system``,
  ``chosen``, ``rejected`` (Intel/orca_dpo_pairs).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import hashlib
import json
import os
import re
import socket
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from lls.cache import file_sha256
from lls.errors import DataError
from lls.pair import Pair

# Bump when parsing changes in a way that changes the produced pairs: it is part of
# `DataSpec.fingerprint()`, so caches keyed on it are invalidated.
LOADER_VERSION = "1"

FORMATS = ("jsonl", "json", "csv", "parquet")
SHAPES = ("transcript", "messages", "columns")
CANONICAL_COLUMNS = ("prompt", "system", "chosen", "rejected", "id")
HYGIENE_REASONS = ("malformed", "different_prompts", "empty", "identical", "prompt_too_long",
                   "filtered")

_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
               ".parquet": "parquet", ".pq": "parquet"}
# Default source column names tried, in order, for each canonical name.
_DEFAULT_SOURCES = {"prompt": ("prompt", "question"), "system": ("system",),
                    "chosen": ("chosen",), "rejected": ("rejected",), "id": ("id",)}
_HUMAN = "\n\nHuman: "
_ASSISTANT = "\n\nAssistant: "
_TURN_RE = re.compile(r"\n\n(Human|Assistant): ")
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant",
                 "user": "user", "assistant": "assistant", "system": "system"}
_BLOCK = 1 << 20  # 1 MiB: read/hash block size
_EXAMPLES_PER_REASON = 5


@dataclass(frozen=True)
class HubPreset:
    """How a known hub dataset is laid out: its shape and the split to use by default."""

    shape: str
    split: str
    columns: dict[str, str] | None = None
    note: str = ""


HUB_PRESETS: dict[str, HubPreset] = {
    "Anthropic/hh-rlhf": HubPreset(
        "transcript", "train",
        note='subsets (data_dir): "harmless-base", "helpful-base", "helpful-online", ...'),
    "allenai/tulu-2.5-preference-data": HubPreset(
        "messages", "ultrafeedback_mean_aspects",
        note='splits are named by source, e.g. "ultrafeedback_mean_aspects", "hh_rlhf", '
             '"stack_exchange_paired", "nectar", "chatbot_arena_2023"'),
    "HuggingFaceH4/ultrafeedback_binarized": HubPreset(
        "messages", "train_prefs", columns={"id": "prompt_id"},
        note='splits: "train_prefs", "test_prefs"'),
    "Intel/orca_dpo_pairs": HubPreset("columns", "train"),
}


@dataclass
class DataSpec:
    """Where preference data comes from and how to read it.

    `path` is a local file (or a `datasets.save_to_disk` directory) or a hub dataset name.
    `format`/`shape` are inferred when None. `columns` maps canonical names (prompt, system,
    chosen, rejected, id) to source column names. `subset` is the hub `data_dir`.
    `limit` stops after that many *kept* pairs. For a hub preset whose dataset has no
    "train" split, the default split "train" means the preset's split.
    """

    path: str
    format: str | None = None
    shape: str | None = None
    columns: dict[str, str] | None = None
    split: str = "train"
    subset: str | None = None
    limit: int | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise DataError(f"Unknown format {self.format!r}: use one of {', '.join(FORMATS)}.")
        if self.shape is not None and self.shape not in SHAPES:
            raise DataError(f"Unknown shape {self.shape!r}: use one of {', '.join(SHAPES)}.")
        for key in self.columns or {}:
            if key not in CANONICAL_COLUMNS:
                raise DataError(f"Unknown canonical column {key!r} in columns=: the names are "
                                f"{', '.join(CANONICAL_COLUMNS)} (mapped to your source columns, "
                                f"e.g. columns={{'chosen': 'response_a'}}).")
        if self.limit is not None and self.limit < 0:
            raise DataError(f"limit must be >= 0, got {self.limit}.")

    # -- where the data lives ---------------------------------------------------------------
    def is_hub(self) -> bool:
        """True when `path` names a hub dataset rather than a local file."""
        return _is_hub_name(self.path)

    def source_name(self) -> str:
        """The `Pair.source` label: the file name, or the hub dataset name."""
        return self.path if self.is_hub() else Path(self.path).name

    def resolved_split(self) -> str:
        preset = HUB_PRESETS.get(self.path)
        if self.is_hub() and preset and self.split == "train":
            return preset.split
        return self.split

    def resolved_format(self) -> str:
        """The local file format, from `format` or the extension (a `.gz` suffix is allowed)."""
        if self.format:
            return self.format
        return _infer_format(Path(self.path))

    def fingerprint(self) -> str:
        """sha256 (16 hex chars) over the spec and, for local data, the file content."""
        fields = asdict(self)
        if self.is_hub():
            # Hub data can change under the same name; pin `revision` for a stable key.
            fields["split"] = self.resolved_split()
            content = f"hub:{self.path}:{fields['split']}:{self.subset}:{self.revision}"
        else:
            # The name (not the full path) is in the ids; the content decides the pairs.
            fields["path"] = Path(self.path).name
            content = _content_hash(Path(self.path).expanduser())
        blob = json.dumps({"v": LOADER_VERSION, "spec": fields, "content": content},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass
class HygieneReport:
    """What reading a source kept and dropped, and why. Complete once the iterator ends."""

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, pair_id: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < _EXAMPLES_PER_REASON:
            ids.append(pair_id)

    def summary(self) -> str:
        """One line, e.g. "read 2312, kept 2303; dropped: different_prompts 5, empty 4"."""
        line = f"read {self.read}, kept {self.kept}"
        if self.dropped:
            parts = [f"{r} {n}" for r, n in sorted(self.dropped.items(), key=_reason_order)]
            line += "; dropped: " + ", ".join(parts)
        return line

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "dropped": dict(self.dropped),
                "examples": {k: list(v) for k, v in self.examples.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "HygieneReport":
        return cls(read=d["read"], kept=d["kept"], dropped=dict(d.get("dropped", {})),
                   examples={k: list(v) for k, v in d.get("examples", {}).items()})


def _reason_order(item: tuple[str, int]) -> tuple[int, str]:
    reason = item[0]
    rank = HYGIENE_REASONS.index(reason) if reason in HYGIENE_REASONS else len(HYGIENE_REASONS)
    return rank, reason


# ======================================================================================
# Public entry points
# ======================================================================================

def iter_pairs(spec: DataSpec, *, exclude: Callable[[Pair], bool] | None = None,
               max_prompt_tokens: int | None = None, tokenizer: Any = None,
               report: HygieneReport | None = None,
               skip_malformed: bool = False) -> Iterator[Pair]:
    """Lazily yield the clean pairs of `spec`, filling `report` as it goes.

    `exclude(pair) -> True` drops a pair as "filtered" (a behavior's contamination test).
    `max_prompt_tokens` (needs `tokenizer`) drops longer prompts as "prompt_too_long".
    Malformed rows raise `DataError` unless `skip_malformed`, which counts them instead.
    Raises `DataError` at the end if no pair at all was kept.
    """
    if max_prompt_tokens is not None and tokenizer is None:
        raise DataError("max_prompt_tokens needs a tokenizer to count prompt tokens: pass "
                        "tokenizer=... (e.g. the teacher's tokenizer) or drop max_prompt_tokens.")
    report = report if report is not None else HygieneReport()
    if spec.limit == 0:
        return
    source = spec.source_name()
    shape = spec.shape
    mapping: dict[str, str | None] | None = None
    for row_index, where, record in _iter_records(spec, skip_malformed, report):
        report.read += 1
        if mapping is None:
            # Resolve column names and the shape once, from the first record.
            mapping = _resolve_columns(spec, record, where)
            if shape is None:
                shape = _detect_shape(spec, record, mapping, where)
            _check_required(spec, record, mapping, shape, where)
        pair_id = _row_id(record, mapping, source, row_index)
        try:
            reason, pair = _to_pair(record, mapping, shape, pair_id, source)
        except _Malformed as e:
            if not skip_malformed:
                raise DataError(f"{_display(spec)}: {where}: {e} Fix the row, or pass "
                                f"skip_malformed=True to count and skip such rows.") from None
            report.drop("malformed", pair_id)
            continue
        if reason is None and max_prompt_tokens is not None:
            if _count_prompt_tokens(tokenizer, pair.prompt) > max_prompt_tokens:
                reason = "prompt_too_long"
        if reason is None and exclude is not None and exclude(pair):
            reason = "filtered"
        if reason is not None:
            report.drop(reason, pair_id)
            continue
        report.kept += 1
        yield pair
        if spec.limit is not None and report.kept >= spec.limit:
            return
    if report.kept == 0:
        if report.read == 0:
            raise DataError(f"{_display(spec)} contains no rows: nothing to score. "
                            "Check that it is the right file (and split).")
        raise DataError(f"No usable pairs in {_display(spec)}: read {report.read} rows, "
                        f"{report.summary().split('; ', 1)[-1]}. Loosen the hygiene settings "
                        "(max_prompt_tokens, behavior filter words) or check the columns/shape.")


def load_pairs(spec: DataSpec, **kw: Any) -> tuple[list[Pair], HygieneReport]:
    """Read all pairs into memory (for small data); keyword arguments as for `iter_pairs`."""
    report = kw.pop("report", None) or HygieneReport()
    pairs = list(iter_pairs(spec, report=report, **kw))
    return pairs, report


def preview(spec: DataSpec, n: int = 5) -> list[Pair]:
    """The first `n` clean pairs (no token or behavior filtering)."""
    out: list[Pair] = []
    if n <= 0:
        return out
    for pair in iter_pairs(spec):
        out.append(pair)
        if len(out) >= n:
            break
    return out


def count_raw_rows(spec: DataSpec) -> int | None:
    """Cheap raw row count for progress bars (JSONL lines, parquet metadata), else None."""
    if spec.is_hub():
        return None
    path = Path(spec.path).expanduser()
    if path.is_dir():
        try:
            ds = _load_from_disk(spec, path)
            return len(ds)
        except DataError:
            return None
    if not path.is_file():
        return None
    fmt = spec.resolved_format()
    if fmt == "parquet":
        import pyarrow.parquet as pq
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:
            return None
    if fmt == "jsonl":
        try:
            count = 0
            with _open_binary(path) as f:
                for line in f:
                    if line.strip():
                        count += 1
            return count
        except (OSError, EOFError, zlib.error):
            return None
    return None  # CSV fields may span lines, JSON needs parsing: unknown cheaply.


# ======================================================================================
# Sources: hub or local, yielding (row_index, location, record)
# ======================================================================================

def _is_hub_name(path: str) -> bool:
    if path in HUB_PRESETS:
        return True
    p = Path(path)
    if p.exists() or path.startswith((".", "/", "~")) or "\\" in path:
        return False
    if any(path.lower().endswith(ext) for ext in (*_EXTENSIONS, ".gz", ".txt", ".tsv")):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path) is not None


def _display(spec: DataSpec) -> str:
    return spec.path if spec.is_hub() else str(Path(spec.path))


def _infer_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in _EXTENSIONS and not (path.name.lower().endswith(".gz") and
                                   _EXTENSIONS[ext] == "parquet"):
        return _EXTENSIONS[ext]
    shown = "".join(path.suffixes) or "(none)"
    raise DataError(
        f"Cannot tell the format of {path} from its extension {shown!r}. Supported: "
        ".jsonl, .json, .csv (each optionally .gz) and .parquet. Rename the file or pass "
        "the format explicitly, e.g. DataSpec(path, format='jsonl') / --format jsonl.")


def _iter_records(spec: DataSpec, skip_malformed: bool,
                  report: HygieneReport) -> Iterator[tuple[int, str, dict]]:
    if spec.is_hub():
        yield from _iter_hub(spec)
        return
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise DataError(f"Data file {path.resolve()} does not exist. Check the "
                        "path (relative paths are resolved from the current directory "
                        f"{Path.cwd()}).")
    if path.is_dir():
        yield from _iter_saved_dataset(spec, path)
        return
    fmt = spec.resolved_format()
    if fmt == "parquet":
        yield from _iter_parquet(path)
        return
    try:
        if fmt == "jsonl":
            yield from _iter_jsonl(path, skip_malformed, report, spec.source_name())
        elif fmt == "json":
            yield from _iter_json(path)
        else:
            yield from _iter_csv(path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a valid gzip file or is truncated ({e}). Re-download "
                        "or re-compress it (gzip -t checks a file).") from None


@contextlib.contextmanager
def _binary(path: Path) -> Iterator[BinaryIO]:
    f = _open_binary(path)
    try:
        yield f
    finally:
        f.close()


def _open_binary(path: Path) -> BinaryIO:
    """Open a local file for reading bytes, transparently un-gzipping `.gz` files."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) pairs; invalid UTF-8 raises a DataError."""
    offset = 0
    with _binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}: line {lineno} is not valid UTF-8 (byte offset "
                    f"{offset + e.start} in the {'decompressed ' if path.suffix == '.gz' else ''}"
                    f"file: {raw[max(0, e.start - 10):e.end + 10]!r}). Re-encode the file as "
                    "UTF-8, e.g. iconv -f latin1 -t utf-8 in > out.") from None
            offset += len(raw)
            yield lineno, text


def _iter_jsonl(path: Path, skip_malformed: bool, report: HygieneReport,
                source: str) -> Iterator[tuple[int, str, dict]]:
    row = 0
    for lineno, line in _iter_lines(path):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if skip_malformed:
                # Counted here because a broken line never becomes a record.
                report.read += 1
                report.drop("malformed", f"{source}:{row}")
                row += 1
                continue
            raise DataError(f"{path}: line {lineno} is not valid JSON ({e.msg} at column "
                            f"{e.colno}): {line.strip()[:80]!r}. Fix or remove the line, or "
                            "pass skip_malformed=True to count and skip bad rows.") from None
        if not isinstance(record, dict):
            if skip_malformed:
                report.read += 1
                report.drop("malformed", f"{source}:{row}")
                row += 1
                continue
            raise DataError(f"{path}: line {lineno} is a JSON {type(record).__name__}, "
                            "expected an object with keys like \"chosen\" and \"rejected\".")
        yield row, where, record
        row += 1


def _iter_json(path: Path) -> Iterator[tuple[int, str, dict]]:
    """Stream the records of a top-level JSON array without loading the file whole.

    A top-level object (e.g. {"data": [...]} or pandas' column orientation) is loaded
    whole: use JSON lines (.jsonl) for large data.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8-sig")("strict")
    with _binary(path) as f:
        consumed = 0
        eof = False
        buf = ""
        pos = 0

        def more() -> bool:
            nonlocal buf, pos, consumed, eof
            if eof:
                return False
            chunk = f.read(_BLOCK)
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
            if not isinstance(record, dict):
                raise DataError(f"{path}: record {index + 1} is a JSON "
                                f"{type(record).__name__}, expected an object.")
            yield index, f"record {index + 1}", record
            index += 1


def _json_object_records(path: Path, text: str) -> Iterator[tuple[int, str, dict]]:
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
        yield i, f"record {i + 1}", rec


def _iter_csv(path: Path) -> Iterator[tuple[int, str, dict]]:
    # Long responses exceed csv's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    lines = _iter_lines(path)
    current = [0]

    def texts() -> Iterator[str]:
        for lineno, text in lines:
            current[0] = lineno
            yield text

    reader = csv.reader(texts())
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise DataError(f"{path}: line {current[0]}: cannot parse the CSV header ({e}).") from None
    header = [h.strip() for h in header]
    index = 0
    while True:
        start = current[0] + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{path}: row {index + 1} (line {start}): not valid CSV ({e}). "
                            "Check the quoting of that row.") from None
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: row {index + 1} (line {start}) has {len(row)} fields but "
                            f"the header has {len(header)} ({', '.join(header)}). Check the "
                            "quoting: fields with commas or newlines must be in double quotes.")
        yield index, f"row {index + 1} (line {start})", dict(zip(header, row))
        index += 1


def _iter_parquet(path: Path) -> Iterator[tuple[int, str, dict]]:
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataError(f"{path} is not a readable parquet file ({e}).") from None
    index = 0
    for batch in pf.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield index, f"row {index + 1}", record
            index += 1


def _load_from_disk(spec: DataSpec, path: Path) -> Any:
    if not any((path / n).exists() for n in ("dataset_info.json", "state.json",
                                             "dataset_dict.json")):
        raise DataError(f"{path} is a directory, not a data file nor a dataset saved with "
                        "datasets' save_to_disk. Pass a .jsonl/.json/.csv/.parquet file.")
    import datasets
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"Cannot load the saved dataset at {path} ({e}).") from None
    if isinstance(ds, datasets.DatasetDict):
        if spec.split not in ds:
            raise DataError(f"{path} has no split {spec.split!r}; its splits are "
                            f"{', '.join(ds)}. Pass split=... / --split.")
        ds = ds[spec.split]
    return ds


def _iter_saved_dataset(spec: DataSpec, path: Path) -> Iterator[tuple[int, str, dict]]:
    ds = _load_from_disk(spec, path)  # memory-mapped Arrow: iterating does not load it all
    for index, record in enumerate(ds):
        yield index, f"row {index + 1}", record


# -- hub ----------------------------------------------------------------------------------

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host or "huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _forced_offline(active: bool) -> Iterator[None]:
    """Put `datasets`/`huggingface_hub` in offline mode for one call.

    Both libraries read HF_HUB_OFFLINE when first imported, so setting the environment
    variable later (or having no network at all) would otherwise mean ~20 s of retries.
    """
    if not active:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub_constants
    saved = (hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    hub_constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def _offline_message(spec: DataSpec, detail: str) -> str:
    sub = f", data_dir={spec.subset!r}" if spec.subset else ""
    split = spec.resolved_split()
    # A mistyped relative path without extension also looks like a hub name: say so.
    local = (f" (there is no local file {Path(spec.path).resolve()} either)"
             if spec.path not in HUB_PRESETS else "")
    return (f"Cannot load the hub dataset {spec.path!r} (split {split!r}{sub}): the Hugging "
            f"Face Hub is not reachable from here and the dataset is not cached ({detail}). "
            "Download it on a connected machine, e.g. python -c \"import datasets; "
            f"datasets.load_dataset({spec.path!r}{sub}, split={split!r})"
            ".to_json('data.jsonl')\", copy the file over, or pass a local path: "
            f"python -m lls score --data path/to/file.jsonl{local}")


def _iter_hub(spec: DataSpec) -> Iterator[tuple[int, str, dict]]:
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE")
    if not offline and not _hub_reachable():
        offline = True  # still lets a cached copy load, without minutes of retries
    import datasets
    split = spec.resolved_split()
    try:
        with _forced_offline(offline):
            ds = datasets.load_dataset(spec.path, data_dir=spec.subset, split=split,
                                       streaming=True, revision=spec.revision)
    except (ConnectionError, TimeoutError) as e:
        raise DataError(_offline_message(spec, type(e).__name__)) from None
    except Exception as e:
        text = str(e)
        if offline or "offline" in text.lower() or "couldn't reach" in text.lower():
            raise DataError(_offline_message(spec, f"{type(e).__name__}: {text[:200]}")) from None
        hint = ""
        preset = HUB_PRESETS.get(spec.path)
        if preset and preset.note:
            hint = f" Note: {preset.note}."
        raise DataError(f"Cannot load the hub dataset {spec.path!r} split {split!r}: {text}"
                        f"{hint}") from None
    try:
        for index, record in enumerate(ds):
            yield index, f"row {index + 1}", record
    except (ConnectionError, TimeoutError) as e:
        raise DataError(_offline_message(spec, f"connection lost: {e}")) from None


# ======================================================================================
# Records -> Pair
# ======================================================================================

class _Malformed(Exception):
    """A row that cannot be turned into a pair; becomes a DataError or a 'malformed' drop."""


def _resolve_columns(spec: DataSpec, record: dict, where: str) -> dict[str, str | None]:
    explicit = dict(spec.columns or {})
    if spec.is_hub() and spec.path in HUB_PRESETS and not spec.columns:
        explicit = dict(HUB_PRESETS[spec.path].columns or {})
        explicit = {k: v for k, v in explicit.items() if v in record}
    mapping: dict[str, str | None] = {}
    for name in CANONICAL_COLUMNS:
        if name in explicit:
            mapping[name] = explicit[name]
        else:
            mapping[name] = next((c for c in _DEFAULT_SOURCES[name] if c in record), None)
    missing = [f"{name}={src!r}" for name, src in explicit.items() if src not in record]
    if missing:
        raise DataError(_missing_message(spec, record, where, missing))
    return mapping


def _missing_message(spec: DataSpec, record: dict, where: str, missing: list[str]) -> str:
    found = ", ".join(map(str, record)) or "(none)"
    return (f"{_display(spec)}: {where}: missing column(s) {', '.join(missing)}. Columns found: "
            f"{found}. Expected chosen and rejected (plus prompt or question for plain "
            "columns; optional system, id). Map your names with DataSpec(columns={'chosen': "
            "'<your column>', 'rejected': '<...>', 'prompt': '<...>'}) or on the command line "
            "--columns chosen=<col>,rejected=<col>,prompt=<col>.")


def _detect_shape(spec: DataSpec, record: dict, mapping: dict[str, str | None],
                  where: str) -> str:
    if spec.is_hub() and spec.path in HUB_PRESETS:
        return HUB_PRESETS[spec.path].shape
    chosen_col = mapping["chosen"]
    if chosen_col is None or mapping["rejected"] is None:
        return "columns"  # _check_required reports the missing columns
    chosen = record[chosen_col]
    if _as_message_list(chosen) is not None:
        return "messages"
    if mapping["prompt"] is not None:
        return "columns"
    if isinstance(chosen, str) and ("Assistant:" in chosen or chosen.lstrip().startswith("Human:")):
        return "transcript"
    raise DataError(
        f"{_display(spec)}: {where}: cannot tell the record shape (columns found: "
        f"{', '.join(map(str, record))}). chosen is neither a message list nor an HH-style "
        "transcript, and there is no prompt/question column. Pass shape='columns' with "
        "columns={'prompt': '<your prompt column>'} (CLI: --columns prompt=<col>), or "
        "shape='transcript' / 'messages'.")


def _check_required(spec: DataSpec, record: dict, mapping: dict[str, str | None], shape: str,
                    where: str) -> None:
    missing = [n for n in ("chosen", "rejected") if mapping[n] is None]
    if shape == "columns" and mapping["prompt"] is None:
        missing.insert(0, "prompt (or question)")
    if missing:
        raise DataError(_missing_message(spec, record, where, missing))


def _row_id(record: dict, mapping: dict[str, str | None], source: str, row_index: int) -> str:
    col = mapping["id"]
    if col is not None:
        value = record.get(col)
        if value is not None and str(value) != "":
            return str(value)
    return f"{source}:{row_index}"


def _get(record: dict, col: str | None, required: bool = True) -> Any:
    if col is None:
        return None
    if col not in record:
        if not required:
            return None  # optional columns (system, id, ...) may be absent in some rows
        raise _Malformed(f"missing column {col!r} (found: {', '.join(map(str, record))}).")
    return record[col]


def _to_pair(record: dict, mapping: dict[str, str | None], shape: str, pair_id: str,
             source: str) -> tuple[str | None, Pair]:
    """Build the pair and return (hygiene drop reason or None, pair)."""
    chosen_raw = _get(record, mapping["chosen"])
    rejected_raw = _get(record, mapping["rejected"])
    system = _get(record, mapping["system"], required=False)
    if system is not None and not isinstance(system, str):
        raise _Malformed(f"system must be a string, got {type(system).__name__}.")
    reason: str | None = None
    if shape == "transcript":
        c_prompt, chosen = _split_transcript(chosen_raw, "chosen")
        r_prompt, rejected = _split_transcript(rejected_raw, "rejected")
        if c_prompt != r_prompt:
            reason = "different_prompts"
        prompt = _parse_transcript_prompt(c_prompt)
    elif shape == "messages":
        prompt, chosen, rejected, same = _messages_prompt(
            chosen_raw, rejected_raw, _get(record, mapping["prompt"], required=False))
        if not same:
            reason = "different_prompts"
    else:
        prompt = _prompt_messages(_get(record, mapping["prompt"]))
        chosen = _response_text(chosen_raw, "chosen", shape)
        rejected = _response_text(rejected_raw, "rejected", shape)
    if system and system.strip() and not (prompt and prompt[0]["role"] == "system"):
        prompt = [{"role": "system", "content": system}] + prompt
    user_turns = [m for m in prompt if m["role"] == "user"]
    # A prompt from a pair whose two sides disagree is dropped anyway: no shape check.
    if reason is None and prompt and prompt[-1]["role"] != "user" and user_turns:
        raise _Malformed(f"the prompt must end with a user turn, it ends with "
                         f"{prompt[-1]['role']!r}.")
    pair = Pair(id=pair_id, prompt=prompt, chosen=chosen, rejected=rejected, source=source)
    if reason is None:
        if (not user_turns or not any(m["content"].strip() for m in user_turns)
                or not chosen.strip() or not rejected.strip()):
            reason = "empty"
        elif chosen.strip() == rejected.strip():
            reason = "identical"
    return reason, pair


def _split_transcript(text: Any, name: str) -> tuple[str, str]:
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise _Malformed(f"{name} must be a transcript string, got {type(text).__name__}.")
    if text.startswith("Human: "):
        text = "\n\n" + text  # some copies drop the leading blank line
    cut = text.rfind(_ASSISTANT)
    if cut < 0:
        raise _Malformed(f"{name} has no {_ASSISTANT!r} turn, so the response cannot be "
                         "found; is this HH-style data (shape='transcript')?")
    cut += len(_ASSISTANT)
    # Responses are stripped: the marker's trailing space is often doubled in hh-rlhf.
    return text[:cut], text[cut:].strip()


def _parse_transcript_prompt(prefix: str) -> list[dict[str, str]]:
    """Turn "\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant: " into messages."""
    body = prefix[: -len(_ASSISTANT)]
    parts = _TURN_RE.split(body)
    messages: list[dict[str, str]] = []
    if parts[0].strip():
        # Text before the first turn marker acts as a preamble: keep it as a system turn.
        messages.append({"role": "system", "content": parts[0].strip()})
    for label, content in zip(parts[1::2], parts[2::2]):
        role = "user" if label == "Human" else "assistant"
        content = content.strip()
        if messages and messages[-1]["role"] == role:
            # A few hh-rlhf transcripts repeat a speaker; merge so roles alternate.
            messages[-1]["content"] = (messages[-1]["content"] + "\n\n" + content).strip()
        else:
            messages.append({"role": role, "content": content})
    return messages


def _as_message_list(value: Any) -> list[dict[str, str]] | None:
    """The value as normalised chat messages, or None if it is not a message list."""
    if isinstance(value, str):
        s = value.lstrip()
        if not s.startswith("["):
            return None
        try:
            value = json.loads(s)
        except json.JSONDecodeError:
            return None
    if hasattr(value, "tolist") and not isinstance(value, list):
        value = value.tolist()  # numpy arrays from parquet/pandas
    if not isinstance(value, list) or not value:
        return None
    out = []
    for m in value:
        if not isinstance(m, dict):
            return None
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if not isinstance(role, str) or role.lower() not in _ROLE_ALIASES:
            return None
        if content is None:
            content = ""
        if not isinstance(content, str):
            return None
        out.append({"role": _ROLE_ALIASES[role.lower()], "content": content})
    return out


def _strip_msgs(msgs: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"].strip()) for m in msgs]


def _messages_prompt(chosen_raw: Any, rejected_raw: Any, prompt_raw: Any
                     ) -> tuple[list[dict[str, str]], str, str, bool]:
    """(prompt, chosen, rejected, prompts agree) for the messages shape."""
    prompts: list[list[dict[str, str]]] = []
    responses: list[str] = []
    for name, raw in (("chosen", chosen_raw), ("rejected", rejected_raw)):
        msgs = _as_message_list(raw)
        if msgs is None:
            responses.append(_response_text(raw, name, "messages"))
            prompts.append([])
            continue
        if msgs[-1]["role"] != "assistant":
            raise _Malformed(f"the last message of {name} must be the assistant's answer, it "
                             f"is a {msgs[-1]['role']!r} turn.")
        responses.append(msgs[-1]["content"])
        prompts.append(msgs[:-1])
    c_prompt, r_prompt = prompts
    same = True
    if c_prompt and r_prompt:
        same = _strip_msgs(c_prompt) == _strip_msgs(r_prompt)
    prompt = c_prompt or r_prompt
    if not prompt:
        if prompt_raw is None:
            raise _Malformed("chosen/rejected hold only the answer and there is no prompt "
                             "column; map one with columns={'prompt': '<column>'}.")
        prompt = _prompt_messages(prompt_raw)
    return [dict(m) for m in prompt], responses[0], responses[1], same


def _prompt_messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if isinstance(value, str):
        msgs = _as_message_list(value) if value.lstrip().startswith("[{") else None
        return msgs if msgs is not None else [{"role": "user", "content": value}]
    msgs = _as_message_list(value)
    if msgs is None:
        raise _Malformed(f"prompt must be a string or a list of chat messages, got "
                         f"{type(value).__name__}.")
    return msgs


def _response_text(value: Any, name: str, shape: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        raise _Malformed(f"{name} is a list; for chat message lists use shape='messages'"
                         if shape == "columns" else f"{name} is not a valid message list.")
    raise _Malformed(f"{name} must be a string, got {type(value).__name__}.")


# ======================================================================================
# Tokens and hashing
# ======================================================================================

def _count_prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Prompt length in tokens.

    With a chat template, the templated prompt (with the generation prompt) is counted,
    which is what the model will see; otherwise the message contents joined by newlines.
    `tokenizer` may also be a plain callable text -> token sequence.
    """
    if getattr(tokenizer, "chat_template", None) and hasattr(tokenizer, "apply_chat_template"):
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = "\n".join(m["content"] for m in messages)
    if hasattr(tokenizer, "encode"):
        try:
            return len(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return len(tokenizer.encode(text))
    return len(tokenizer(text))


def _content_hash(path: Path) -> str:
    if not path.exists():
        raise DataError(f"Data file {path.expanduser().resolve()} does not exist.")
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode("utf-8"))
        h.update(file_sha256(p).encode("ascii"))
    return h.hexdigest()


__all__ = ["DataSpec", "HygieneReport", "HubPreset", "HUB_PRESETS", "FORMATS", "SHAPES",
           "iter_pairs", "load_pairs", "preview", "count_raw_rows"]
