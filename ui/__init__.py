"""Streamlit-side helpers shared by the dashboard pages (the `lls` library never imports this)."""
