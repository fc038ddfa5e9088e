"""Decode Arena dashboards (Streamlit): leaderboard, per-run explorer, admin view.

    streamlit run dashboards/app.py      (scripts/services.py starts it on 127.0.0.1:8501)

Reads the lake through DuckDB views (lake.views), the bucket, Docker and Dagster; never writes.
Every page needs a logged-in intake session (dashboards/access.py): participants see the leaderboard
and their own runs, admins everything.
Data access lives in dashboards/data.py; the pages in dashboards/screens/ only lay it out.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402

from dashboards.access import require_viewer  # noqa: E402
from dashboards.screens import admin, explorer, leaderboard  # noqa: E402

st.set_page_config(page_title="Decode Arena", layout="wide")
viewer = require_viewer()  # anonymous visitors stop here (a pointer to intake's login page)
st.sidebar.caption(f"Logged in as **{viewer.name}**" + (" (admin)" if viewer.is_admin else ""))
# The default page is served at "/" (Streamlit ignores a default page's url_path).
page = st.navigation([
    st.Page(leaderboard.render, title="Leaderboard", icon=":material/leaderboard:", url_path="leaderboard",
            default=True),
    st.Page(explorer.render, title="Run explorer", icon=":material/query_stats:", url_path="explorer"),
    st.Page(admin.render, title="Admin", icon=":material/monitor_heart:", url_path="admin"),
])
page.run()
