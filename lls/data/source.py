"""The data stage: read preference data (local files or the Hugging Face Hub) into `Pair`s.

Everything here is lazy: `iter_pairs` is a generator over the source, so memory does not
grow with the dataset size (except JSON files whose top level is an object). Rows that are
unusable for LLS are counted in a `HygieneReport` (`lls.data.hygiene`) instead of crashing the
run; rows that are broken (bad JSON, bad UTF-8, wrong types, a compressed stream cut short)
raise a `DataError` naming the file and position, unless malformed rows are skipped
(`DataSpec(skip_malformed=True)`), which counts them instead. `lls.data.validate` checks a whole
source in one pass before any model loads.

Readers live in `lls.data.readers` (files) and `lls.data.hub` (hub datasets); record shapes
(transcript, messages, columns, pairwise) in `lls.data.shapes`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.cache import file_sha256
from ..core.errors import DataError
from ..core.pair import Pair
from .hub import HUB_PRESETS, HubPreset, is_hub_name, iter_hub
from .hygiene import HYGIENE_REASONS, HygieneReport, asks_readout, count_prompt_tokens, plural
from .readers import (FORMATS, Row, count_jsonl_rows, count_parquet_rows, infer_format,
                      iter_local, iter_saved_dataset, load_from_disk)
from .shapes import (CANONICAL_COLUMNS, SHAPES, WINNER_SIDES, AmbiguousWinner, Malformed,
                     check_required, describe_codes, detect_shape, resolve_columns, row_id,
                     to_pair, winner_code)

# Bump when parsing changes in a way that changes the produced pairs: it is part of
# `DataSpec.fingerprint()`, so caches keyed on it are invalidated. 2: comparison exports and
# JSON lists of turns are parsed (they used to be read as literal text). 3: multi-turn
# comparisons are read at the first answers that differ; numeric winners need a coding;
# `preference` is no longer a default winner column.
LOADER_VERSION = "3"

SKIP_ADVICE = "command line: --skip-malformed; Setup page: 'Skip malformed rows'"


@dataclass
class DataSpec:
    """Where preference data comes from and how to read it.

    `path` is a local file (or a `datasets.save_to_disk` directory) or a hub dataset name.
    `format`/`shape` are inferred when None. `columns` maps canonical names (prompt, system,
    chosen, rejected, id, response_a, response_b, winner) to source column names. `subset` is
    the hub `data_dir`. `limit` stops after that many *kept* pairs. `skip_malformed` counts
    and skips broken rows instead of failing. For a hub preset whose dataset has no "train"
    split, the default split "train" means the preset's split. `winner_codes` maps the values
    of a comparison export's winner column to "a", "b", "tie" or "both_bad" (e.g.
    {"0": "a", "1": "b"}); numeric winners need it, since exports code them differently.
    """

    path: str
    format: str | None = None
    shape: str | None = None
    columns: dict[str, str] | None = None
    split: str = "train"
    subset: str | None = None
    limit: int | None = None
    revision: str | None = None
    skip_malformed: bool = False
    winner_codes: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise DataError(f"Unknown format {self.format!r}: use one of {', '.join(FORMATS)}.")
        if self.shape is not None and self.shape not in SHAPES:
            raise DataError(f"Unknown shape {self.shape!r}: use one of {', '.join(SHAPES)}.")
        for key in self.columns or {}:
            if key not in CANONICAL_COLUMNS:
                raise DataError(f"Unknown column name {key!r} in the column mapping: the names "
                                f"are {', '.join(CANONICAL_COLUMNS)}, each mapped to one of "
                                "your source columns (command line: --columns "
                                "chosen=response_a,...; Setup page: 'Map your columns').")
        if self.limit is not None and self.limit < 0:
            raise DataError(f"limit must be >= 0, got {self.limit}.")
        if self.winner_codes is not None:
            codes = {winner_code(k): str(v).strip().lower() for k, v in self.winner_codes.items()}
            bad = [f"{k}={v}" for k, v in codes.items() if v not in WINNER_SIDES]
            if bad or not {"a", "b"} <= set(codes.values()):
                raise DataError(
                    f"Winner codes {describe_codes(self.winner_codes)}: "
                    + (f"{', '.join(bad)} is not a side; " if bad else "")
                    + "each code maps to a, b, tie or both_bad, and both a and b need a code "
                    "(command line: --winner-codes 0=a,1=b).")
            self.winner_codes = codes

    # -- where the data lives ---------------------------------------------------------------
    def is_hub(self) -> bool:
        """True when `path` names a hub dataset rather than a local file."""
        return is_hub_name(self.path)

    def source_name(self) -> str:
        """The `Pair.source` label: the file name, or the hub dataset name."""
        return self.path if self.is_hub() else Path(self.path).name

    def display(self) -> str:
        """How messages name the source: the hub name or the path as given."""
        return self.path if self.is_hub() else str(Path(self.path))

    def resolved_split(self) -> str:
        """The split to read (a hub preset's own split when "train" is asked for)."""
        preset = HUB_PRESETS.get(self.path)
        if self.is_hub() and preset and self.split == "train":
            return preset.split
        return self.split

    def resolved_format(self) -> str:
        """The local file format, from `format` or the extension (a `.gz` suffix is allowed)."""
        if self.format:
            return self.format
        return infer_format(Path(self.path))

    def fingerprint(self) -> str:
        """sha256 (16 hex chars) over the spec and, for local data, the file content."""
        fields = asdict(self)
        for name in ("skip_malformed", "winner_codes"):
            if not fields[name]:
                del fields[name]  # options left at their default do not change the key
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
class Checked:
    """One source row after parsing: a pair (or None), why it is dropped, what is broken.

    `reason` is None (usable), a hygiene reason, "malformed" or "truncated"; `error` says
    what is broken for the last two.
    """

    where: str
    pair_id: str
    pair: Pair | None
    reason: str | None = None
    error: str | None = None


# ======================================================================================
# Public entry points
# ======================================================================================

def check_rows(spec: DataSpec) -> Iterator[Checked]:
    """Every row of `spec` parsed into a `Checked` (no limit, no token or behavior checks).

    Whole-source problems (a missing file, unknown columns, an unreadable header) raise
    `DataError`; a broken row is yielded with reason "malformed", a stream cut short as a last
    row with reason "truncated".
    """
    source = spec.source_name()
    display = spec.display()
    shape = spec.shape
    mapping: dict[str, str | None] | None = None
    for row in _iter_rows(spec):
        if row.record is None:
            yield Checked(row.where, f"{source}:{row.index}", None, row.kind,
                          f"{display}: {row.where} {row.error}.")
            continue
        record = row.record
        if mapping is None:
            # Resolve column names and the shape once, from the first readable record.
            explicit = spec.columns
            if spec.is_hub() and spec.path in HUB_PRESETS and not spec.columns:
                preset_cols = HUB_PRESETS[spec.path].columns or {}
                explicit = {k: v for k, v in preset_cols.items() if v in record}
            mapping = resolve_columns(explicit, record, row.where, display)
            if shape is None:
                shape = (HUB_PRESETS[spec.path].shape if spec.is_hub() and spec.path in
                         HUB_PRESETS else detect_shape(record, mapping, row.where, display))
            check_required(record, mapping, shape, row.where, display)
        pair_id = row_id(record, mapping, source, row.index)
        try:
            reason, pair = to_pair(record, mapping, shape, pair_id, source, spec.winner_codes)
        except AmbiguousWinner as e:
            raise DataError(f"{display}: {row.where}: {e}") from None
        except Malformed as e:
            yield Checked(row.where, pair_id, None, "malformed", f"{display}: {row.where}: {e}")
            continue
        yield Checked(row.where, pair_id, pair, reason)


def iter_pairs(spec: DataSpec, *, exclude: Callable[[Pair], bool] | None = None,
               max_prompt_tokens: int | None = None, tokenizer: Any = None,
               report: HygieneReport | None = None, skip_malformed: bool = False,
               check: Callable[[Pair], str | None] | None = None) -> Iterator[Pair]:
    """Lazily yield the clean pairs of `spec`, filling `report` as it goes.

    `exclude(pair) -> True` drops a pair as "filtered" (a behavior's contamination test).
    `max_prompt_tokens` (needs `tokenizer`) drops longer prompts as "prompt_too_long".
    `check(pair) -> reason or None` drops a pair under that reason (e.g. "too_long").
    Malformed rows raise `DataError` unless `skip_malformed` (or `spec.skip_malformed`),
    which counts them instead. Raises `DataError` at the end if no pair at all was kept.
    """
    if max_prompt_tokens is not None and tokenizer is None:
        raise DataError("max_prompt_tokens needs a tokenizer to count prompt tokens: pass "
                        "tokenizer=... (e.g. the teacher's tokenizer) or drop max_prompt_tokens.")
    report = report if report is not None else HygieneReport()
    if spec.limit == 0:
        return
    skip = skip_malformed or spec.skip_malformed
    for c in check_rows(spec):
        if c.reason == "truncated":
            if not skip:
                raise DataError(f"{c.error} Rows before it were read; nothing after it can be.")
            report.drop("truncated", c.pair_id)
            report.warnings.append(f"{c.error} Skipped on request: the rows after it are lost.")
            continue
        report.read += 1
        if c.reason == "malformed":
            if not skip:
                raise DataError(f"{c.error} Fix or remove the row, or skip malformed rows "
                                f"({SKIP_ADVICE}).")
            report.drop("malformed", c.pair_id)
            continue
        reason, pair = c.reason, c.pair
        if reason is None and max_prompt_tokens is not None:
            if count_prompt_tokens(tokenizer, pair.prompt) > max_prompt_tokens:
                reason = "prompt_too_long"
        if reason is None and exclude is not None and exclude(pair):
            reason = "filtered"
        if reason is None and check is not None:
            reason = check(pair)  # last: it may be the costly one (rendering)
        if reason is not None:
            report.drop(reason, c.pair_id)
            continue
        report.kept += 1
        if asks_readout(pair.prompt):  # counted, kept: dropping would change the run's pairs
            report.note("readout_question", c.pair_id)
        yield pair
        if spec.limit is not None and report.kept >= spec.limit:
            return
    if report.kept == 0:
        if report.read == 0:
            raise DataError(f"{spec.display()} contains no rows: nothing to score. "
                            "Check that it is the right file (and split).")
        raise DataError(f"No usable pairs in {spec.display()}: read "
                        f"{plural(report.read, 'row')}, {report.summary().split('; ', 1)[-1]}. "
                        f"What to do: {report.advice()}.")


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
            return len(load_from_disk(path, spec.split))
        except DataError:
            return None
    if not path.is_file():
        return None
    fmt = spec.resolved_format()
    if fmt == "parquet":
        return count_parquet_rows(path)
    if fmt == "jsonl":
        return count_jsonl_rows(path)
    return None  # CSV fields may span lines, JSON needs parsing: unknown cheaply.


# ======================================================================================
# Sources
# ======================================================================================

def _iter_rows(spec: DataSpec) -> Iterator[Row]:
    if spec.is_hub():
        yield from iter_hub(spec.path, spec.subset, spec.resolved_split(), spec.revision)
        return
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise DataError(f"Data file {path.resolve()} does not exist. Check the "
                        "path (relative paths are resolved from the current directory "
                        f"{Path.cwd()}).")
    if path.is_dir():
        yield from iter_saved_dataset(path, spec.split)
        return
    yield from iter_local(path, spec.resolved_format())


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
           "HYGIENE_REASONS", "Checked", "check_rows", "iter_pairs", "load_pairs", "preview",
           "count_raw_rows"]
