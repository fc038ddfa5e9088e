"""The leaderboard page's paging, outside a browser (Streamlit's bare mode: a widget returns its default)."""
from __future__ import annotations

import pandas as pd

from dashboards.screens.leaderboard import PAGE_ROWS, page_of


def test_a_long_leaderboard_shows_one_page_of_rows_and_a_short_one_all():
    long = pd.DataFrame({"rank": range(1, 2 * PAGE_ROWS + 51)})
    first = page_of(long, "test_long")
    assert first["rank"].tolist() == list(range(1, PAGE_ROWS + 1))
    short = long.head(PAGE_ROWS)
    assert page_of(short, "test_short") is short
