"""Setup's data section: the source pickers, uploads, the column-mapping form, the whole-source
check and the preview; a "Sampled pairs" source hands over to `ui.sampled_source`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st

from lls import data as lls_data
from lls.core.cache import default_cache_dir
from lls.core.errors import LLSError
from lls.data.hygiene import label
from lls.data.validate import validate_source
from lls.scoring import SamplingSpec
from ui import sampled_source


def save_upload(uploaded) -> str:
    """Save an uploaded file under cache/uploads/ (content-addressed); returns its path."""
    data = uploaded.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:12]
    name = Path(uploaded.name).name
    path = default_cache_dir() / "uploads" / f"{digest}-{name}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(path)


def columns_from_error(message: str) -> list[str]:
    """Column names listed by lls.data's "missing column(s) ... Columns found: a, b." errors."""
    for marker in ("Columns found: ", "columns found: "):
        if marker in message:
            tail = message.split(marker, 1)[1]
            tail = tail.split(". ", 1)[0].split(")", 1)[0]
            return [c.strip() for c in tail.split(",") if c.strip() and c.strip() != "(none)"]
    return []


SAMPLED = "Sampled pairs (the model's own answers)"
FIRST_RUN_PAIRS = 200
FIRST_RUN_HELP = (f"A short first run: scoring stops after {FIRST_RUN_PAIRS} clean pairs (or "
                  "the limit below, if smaller), a few minutes on the bundled model instead "
                  "of half an hour for the whole bundled file. Turn it off to score everything.")
SOURCES = ["Local path", "Upload a file", "Hub preset", "Hub dataset name", SAMPLED]


@dataclass
class DataChoice:
    """What the data section chose: a dataset (`spec`) or sampled pairs (`sampling`), and
    whether scoring may start from it (`ok`)."""

    spec: lls_data.DataSpec | None = None
    sampling: SamplingSpec | None = None
    ok: bool = False


def data_section(default_path: str, shared: Path) -> DataChoice:
    """Setup's section 1: pick, check and preview the data (or the sampled-pairs settings)."""
    path, split, subset = pick_source(default_path)
    if path == SAMPLED:
        sampling = sampled_source.sampled_source(shared)
        return DataChoice(sampling=sampling, ok=sampling is not None)
    first = st.toggle(f"First run: score at most {FIRST_RUN_PAIRS} pairs", value=True,
                      key="first_run", help=FIRST_RUN_HELP)
    limit = st.number_input("Limit: stop after this many clean pairs (0 = the whole dataset)",
                            min_value=0, value=0, step=1, key="data_limit")
    if first:
        limit = min(int(limit) or FIRST_RUN_PAIRS, FIRST_RUN_PAIRS)
    mapping = st.session_state.get("column_map")
    columns = shape = None
    if mapping and mapping.get("path") == path:
        columns, shape = mapping.get("columns") or None, mapping.get("shape")
        c1, c2 = st.columns([4, 1])
        c1.info(f"Column mapping in use: {columns or '(default)'}, shape: {shape or 'auto'}")
        if c2.button("Clear mapping", key="clear_map"):
            del st.session_state["column_map"]
            st.rerun()
    if not path:
        st.info("Choose a data source above.")
        return DataChoice()
    try:
        spec = lls_data.DataSpec(path, shape=shape, columns=columns, split=split, subset=subset,
                                 limit=int(limit) or None)
    except LLSError as e:
        st.error(str(e))
        return DataChoice()
    want = not spec.is_hub() or st.session_state.get("hub_loaded") == (spec.path, split, subset)
    if spec.is_hub() and not want:
        st.caption("Hub datasets are read on demand (it may download data).")
        if st.button("Load a preview from the hub", key="hub_load"):
            st.session_state["hub_loaded"] = (spec.path, split, subset)
            want = True
    if not want:
        return DataChoice(spec)
    try:
        report, spec = validation_panel(spec)
        with st.spinner("Reading a preview…"):
            rows = lls_data.preview(spec, n=5)
        if limit:
            st.caption(f"Scoring stops after {int(limit)} clean pairs"
                       + (" (first run)." if first else "."))
        st.dataframe([{"id": p.id, "turns": len(p.prompt),
                       "prompt (last turn)": p.prompt[-1]["content"][:200] if p.prompt else "",
                       "chosen": p.chosen[:200], "rejected": p.rejected[:200]} for p in rows],
                     hide_index=True, key="preview_table")
        return DataChoice(spec, ok=report["ok"])
    except LLSError as e:
        st.error(str(e))
        msg = str(e)
        if "missing column" in msg or "cannot tell the record shape" in msg:
            mapping_form(path, msg)
    except Exception as e:  # noqa: BLE001 - unreadable files must not crash the page
        st.error(f"Could not read {path}: {type(e).__name__}: {e}")
    return DataChoice(spec)


def pick_source(default_path: str = "") -> tuple[str | None, str, str | None]:
    """The data source widgets: (path or hub name, split, subset/data_dir)."""
    source = st.radio("Source", SOURCES, horizontal=True, key="data_source")
    path, split, subset = None, "train", None
    if source == SAMPLED:
        path = SAMPLED
    elif source == "Local path":
        path = st.text_input("Local file (jsonl / json / csv / parquet, optionally .gz) or a "
                             "dataset folder saved by the datasets library",
                             value=default_path, key="data_path").strip() or None
    elif source == "Upload a file":
        up = st.file_uploader("Preference data file", key="data_upload",
                              type=["jsonl", "json", "csv", "parquet", "gz", "ndjson"])
        if up is not None:
            path = save_upload(up)
            st.caption(f"Saved to `{path}`")
    else:
        if source == "Hub preset":
            name = st.selectbox("Hub preset", list(lls_data.HUB_PRESETS), key="hub_preset")
            preset = lls_data.HUB_PRESETS[name]
            if preset.note:
                st.caption(preset.note)
            default_split = preset.split
        else:
            name = st.text_input("Hub dataset name (owner/name)", key="hub_name").strip()
            default_split = "train"
        c1, c2 = st.columns(2)
        split = c1.text_input("Split", value=default_split,
                              key=f"hub_split::{source}").strip() or "train"
        subset = c2.text_input("Subset: the dataset's data folder or configuration (optional)",
                               key=f"hub_subset::{source}",
                               help="e.g. harmless-base for Anthropic/hh-rlhf").strip() or None
        path = name or None
    return path, split, subset


def mapping_form(path: str, message: str) -> None:
    """Map the file's columns to prompt/system/chosen/rejected/id when loading failed; the
    mapping goes to session state ("column_map") and the page reruns with it."""
    found = columns_from_error(message)
    with st.form("column_mapping"):
        st.markdown("**Map your columns** (the file's shape was not recognised)")
        fields = {}
        cols = st.columns(5)
        for i, canon in enumerate(("prompt", "system", "chosen", "rejected", "id")):
            if found:
                fields[canon] = cols[i].selectbox(canon, ["(none)"] + found, key=f"map_{canon}",
                                                  index=1 + found.index(canon) if canon in found else 0)
            else:
                fields[canon] = cols[i].text_input(canon, key=f"map_{canon}") or "(none)"
        shape_pick = st.selectbox("Shape", ["auto", *lls_data.SHAPES], key="map_shape")
        if st.form_submit_button("Use this mapping"):
            st.session_state["column_map"] = {
                "path": path, "shape": None if shape_pick == "auto" else shape_pick,
                "columns": {k: v for k, v in fields.items() if v and v != "(none)"}}
            st.rerun()


def hygiene_view(rep: dict | None, unit: str = "rows") -> None:
    """A hygiene check's result (`HygieneReport.to_dict()`, or {"error": ...}): kept and
    dropped counts, and a table of drop reasons (in the user's words) with example ids;
    `unit`: what was read (rows of a dataset, prompts for sampled pairs)."""
    if not rep:
        return
    if "error" in rep:
        st.error(rep["error"])
        return
    r = lls_data.HygieneReport.from_dict(rep)
    st.success(f"Hygiene: {r.describe(unit)}")
    for w in r.warnings:
        st.warning(w)
    if r.dropped:
        st.dataframe([{"dropped because": label(k), "count": v,
                       "example ids": ", ".join(r.examples.get(k, []))}
                      for k, v in r.dropped.items()], hide_index=True, key="hyg_table")


def validation_panel(spec: lls_data.DataSpec) -> tuple[dict, lls_data.DataSpec]:
    """Check every row of the source once (cached per source and choice), show the counts
    and the first broken positions; returns (report dict, spec with the skip choice).
    Scoring may start only when the report is `ok`."""
    skip = st.checkbox("Skip malformed rows", key="skip_malformed",
                       help="Broken rows (bad JSON or encoding, missing or empty fields, a "
                            "compressed file cut short) are counted and skipped instead of "
                            "stopping the run.")
    spec = replace(spec, skip_malformed=skip)
    key = (spec.fingerprint(), skip)
    cached = st.session_state.get("_validation")
    if not cached or cached[0] != key:
        with st.spinner("Checking every row of the source…"):
            cached = (key, validate_source(spec).to_dict())
        st.session_state["_validation"] = cached
    rep = cached[1]
    st.markdown(f"**Checked the whole source:** {rep['summary']}")
    for w in rep["warnings"]:
        st.warning(w)
    if not rep["ok"]:
        st.error(rep.get("problem") or "This source cannot be scored as it is.")
    if rep["positions"]:
        with st.expander(f"First broken rows ({rep['malformed']} in all)"):
            st.markdown("\n".join(f"- {p}" for p in rep["positions"]))
    return rep, spec
