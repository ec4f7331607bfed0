"""LLS Studio library: Logit-Linear Selection of preference data (Aden-Ali et al., ICML 2026).

Stages, one module each: data (preference pairs), behaviors (target system prompts),
models (loading teachers/students), scoring (LLS weights), cache (chunked, resumable
results), selection (top-gamma subsets and export), jobs (background processes).
Nothing in this package imports Streamlit.
"""

__version__ = "0.1.0"
