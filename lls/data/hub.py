"""Hugging Face Hub datasets: the known presets and streaming a hub dataset (offline-aware)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..core.errors import DataError
from .readers import EXTENSIONS, Row

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


def is_hub_name(path: str) -> bool:
    """True when `path` names a hub dataset ("owner/name") rather than a local file."""
    if path in HUB_PRESETS:
        return True
    p = Path(path)
    if p.exists() or path.startswith((".", "/", "~")) or "\\" in path:
        return False
    if any(path.lower().endswith(ext) for ext in (*EXTENSIONS, ".gz", ".txt", ".tsv")):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path) is not None


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


def _offline_message(name: str, subset: str | None, split: str, detail: str) -> str:
    sub = f", data_dir={subset!r}" if subset else ""
    # A mistyped relative path without extension also looks like a hub name: say so.
    local = (f" (there is no local file {Path(name).resolve()} either)"
             if name not in HUB_PRESETS else "")
    return (f"Cannot load the hub dataset {name!r} (split {split!r}{sub}): the Hugging "
            f"Face Hub is not reachable from here and the dataset is not cached ({detail}). "
            "Download it on a connected machine, e.g. python -c \"import datasets; "
            f"datasets.load_dataset({name!r}{sub}, split={split!r})"
            ".to_json('data.jsonl')\", copy the file over, or pass a local path: "
            f"python -m lls score --data path/to/file.jsonl{local}")


def iter_hub(name: str, subset: str | None, split: str, revision: str | None) -> Iterator[Row]:
    """Stream the rows of a hub dataset (offline: a cached copy, or a DataError saying how to get one)."""
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE")
    if not offline and not _hub_reachable():
        offline = True  # still lets a cached copy load, without minutes of retries
    import datasets
    try:
        with _forced_offline(offline):
            ds = datasets.load_dataset(name, data_dir=subset, split=split,
                                       streaming=True, revision=revision)
    except (ConnectionError, TimeoutError) as e:
        raise DataError(_offline_message(name, subset, split, type(e).__name__)) from None
    except Exception as e:
        text = str(e)
        if offline or "offline" in text.lower() or "couldn't reach" in text.lower():
            raise DataError(_offline_message(name, subset, split, f"{type(e).__name__}: {text[:200]}")) from None
        hint = ""
        preset = HUB_PRESETS.get(name)
        if preset and preset.note:
            hint = f" Note: {preset.note}."
        raise DataError(f"Cannot load the hub dataset {name!r} split {split!r}: {text}"
                        f"{hint}") from None
    try:
        for index, record in enumerate(ds):
            yield Row(index, f"row {index + 1}", record)
    except (ConnectionError, TimeoutError) as e:
        raise DataError(_offline_message(name, subset, split, f"connection lost: {e}")) from None
