"""The dashboard's glossary: one expander, the same words and meanings on every page
(`lls.core.glossary`); a page names the terms its numbers use."""

from __future__ import annotations

import streamlit as st

from lls.core import glossary as G

TITLE = "What the words on this page mean"


def glossary(*terms: str, note: str | None = None, expanded: bool = False) -> None:
    """An expander with the meaning of `terms` (ids of `lls.core.glossary.TERMS`; none: all),
    and `note` below them (what is specific to this page)."""
    with st.expander(TITLE, expanded=expanded):
        st.markdown(G.markdown(terms or None))
        if note:
            st.caption(note)
