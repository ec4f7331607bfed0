"""Setup's data-source helpers: uploads and the column-mapping form."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import streamlit as st

from lls import data as lls_data
from lls.core.cache import default_cache_dir
from lls.data.validate import validate_source


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


SOURCES = ["Local path", "Upload a file", "Hub preset", "Hub dataset name"]


def pick_source(default_path: str = "") -> tuple[str | None, str, str | None]:
    """The data source widgets: (path or hub name, split, subset/data_dir)."""
    source = st.radio("Source", SOURCES, horizontal=True, key="data_source")
    path, split, subset = None, "train", None
    if source == "Local path":
        path = st.text_input("Local file (jsonl / json / csv / parquet, optionally .gz) or a "
                             "save_to_disk folder", value=default_path,
                             key="data_path").strip() or None
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
        subset = c2.text_input("Subset / data_dir (optional)",
                               key=f"hub_subset::{source}").strip() or None
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


def hygiene_view(rep: dict | None) -> None:
    """A hygiene check's result (`HygieneReport.to_dict()`, or {"error": ...}): kept and
    dropped counts, and a table of drop reasons with example ids."""
    if not rep:
        return
    if "error" in rep:
        st.error(rep["error"])
        return
    r = lls_data.HygieneReport.from_dict(rep)
    st.success(f"Hygiene: {r.summary()}")
    if r.dropped:
        st.dataframe([{"reason": k, "dropped": v, "example ids": ", ".join(r.examples.get(k, []))}
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
