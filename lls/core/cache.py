"""The cache stage: chunked, atomic, verifiable storage of run results under `cache/`.

A run directory holds `manifest.json` (settings, status, hygiene report) and chunks
`chunk-000123.parquet`, each with a sidecar `chunk-000123.json` (row count and sha256).
A chunk is written to a temporary file, fsynced and renamed, and its sidecar is written
last, so a chunk without a sidecar, or whose bytes no longer match it, is treated as
missing and recomputed. Finished chunks survive a crash, a kill or a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import CacheError


def default_cache_dir() -> Path:
    """Runtime artifacts live here (`LLS_CACHE` overrides; default `./cache`)."""
    return Path(os.environ.get("LLS_CACHE", "cache")).resolve()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old or the whole new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str).encode())


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default
    except ValueError as e:
        raise CacheError(f"{path} is not valid JSON ({e}); delete it to recompute.") from e


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ChunkStore:
    """A directory of parquet chunks plus a manifest: one cached run."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def key(self) -> str:
        return self.path.name

    # manifest
    def manifest(self) -> dict:
        return read_json(self.path / "manifest.json", default={}) or {}

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.path / "manifest.json", manifest)

    def update_manifest(self, **fields) -> dict:
        m = self.manifest()
        m.update(fields)
        self.write_manifest(m)
        return m

    # chunks
    def chunk_path(self, k: int) -> Path:
        return self.path / f"chunk-{k:06d}.parquet"

    def write_chunk(self, k: int, table, **parquet_options) -> None:
        """Write one chunk (a pyarrow Table) atomically, then its verifying sidecar
        (`parquet_options`: passed to `pyarrow.parquet.write_table`)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", **parquet_options)
        data = sink.getvalue().to_pybytes()
        atomic_write_bytes(self.chunk_path(k), data)
        atomic_write_json(self.chunk_path(k).with_suffix(".json"),
                          {"rows": table.num_rows, "sha256": _sha256(data)})

    def chunk_ok(self, k: int) -> bool:
        """True when chunk k exists, matches its sidecar and parses."""
        return self.read_chunk(k) is not None

    def read_chunk(self, k: int):
        """The chunk as a pyarrow Table, or None when missing or corrupt (then recompute)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        side = read_json_safe(self.chunk_path(k).with_suffix(".json"))
        try:
            data = self.chunk_path(k).read_bytes()
        except FileNotFoundError:
            return None
        if not side or side.get("sha256") != _sha256(data):
            return None
        try:
            table = pq.read_table(pa.BufferReader(data))
        except Exception:  # noqa: BLE001 - any parse failure means "recompute"
            return None
        return table if table.num_rows == side.get("rows") else None

    def chunk_ids(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.path.glob("chunk-*.parquet"))

    def read_all(self):
        """All valid chunks concatenated in chunk order (pyarrow Table)."""
        import pyarrow as pa

        tables = []
        for k in self.chunk_ids():
            t = self.read_chunk(k)
            if t is None:
                raise CacheError(f"Chunk {self.chunk_path(k)} is corrupt or incomplete; "
                                 "run the same command again to recompute it.")
            tables.append(t)
        if not tables:
            raise CacheError(f"{self.path} has no finished chunks yet.")
        return pa.concat_tables(tables)

    def delete(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, memoised on (path, size, mtime) so large files hash once
    per process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL log; a missing file is empty, and an unparsable line (the half-written
    last line of a running job) is skipped."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return out


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one JSON line with a single write (O_APPEND), so readers never see half a row
    from a concurrent writer of whole lines."""
    line = json.dumps(obj, ensure_ascii=False, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


@dataclass
class StoredRun:
    """A run stored as a ChunkStore (scoring runs, evaluations): key, path, manifest."""

    store: ChunkStore

    @property
    def key(self) -> str:
        return self.store.key

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def manifest(self) -> dict:
        return self.store.manifest()

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"


def read_json_safe(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def runs_root(kind: str, cache_dir: Path | None = None) -> Path:
    """Where runs of one kind ("scores", "adapters", "evals", ...) live."""
    return Path(cache_dir or default_cache_dir()) / kind


def list_stores(kind: str, cache_dir: Path | None = None) -> list[ChunkStore]:
    root = runs_root(kind, cache_dir)
    if not root.is_dir():
        return []
    stores = [ChunkStore(p) for p in root.iterdir() if (p / "manifest.json").is_file()]
    return sorted(stores, key=lambda s: s.manifest().get("created", ""), reverse=True)


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-serialisable parts (cache keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
