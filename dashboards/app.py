"""Decode Arena dashboards (Streamlit): leaderboard, per-run explorer, admin view.

Reads the lake through DuckDB views (lake.views); never writes anything.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402

from dashboards.pages import admin, explorer, leaderboard  # noqa: E402

st.set_page_config(page_title="Decode Arena", layout="wide")
page = st.navigation([
    st.Page(leaderboard.render, title="Leaderboard", url_path="leaderboard", default=True),
    st.Page(explorer.render, title="Run explorer", url_path="explorer"),
    st.Page(admin.render, title="Admin", url_path="admin"),
])
page.run()
