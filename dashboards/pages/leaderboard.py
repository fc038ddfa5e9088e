"""Leaderboard: ranked rows first, then participants with no ranked evaluation (status, reason)."""
from __future__ import annotations

import streamlit as st

from challenges import challenge_names
from dashboards.data import has, query


def render() -> None:
    st.title("Decode Arena — leaderboard")
    names = challenge_names()
    challenge = st.selectbox("Challenge", names, index=0) if len(names) > 1 else names[0]
    if not has("leaderboard"):
        st.info("No leaderboard yet: it appears after the first evaluation finishes.")
        return
    df = query("SELECT * FROM leaderboard WHERE challenge = $c ORDER BY rank NULLS LAST, submitted_at",
               {"c": challenge})
    cols = ["rank", "display_name", "participant", "status", "reason", "tokens_per_second", "latency_p99_ms",
            "ttft_p50_ms", "tpot_p50_ms", "accuracy", "tokens_per_second_cv", "peak_memory_bw_GBs",
            "energy_joules", "runtime", "submission_id"]
    ranked = df[df["rank"].notna()]
    st.subheader(f"Ranked ({len(ranked)})")
    st.dataframe(ranked[[c for c in cols if c in df]], hide_index=True, use_container_width=True)
    unranked = df[df["rank"].isna()]
    if len(unranked):
        st.subheader(f"Not ranked ({len(unranked)})")
        st.dataframe(unranked[[c for c in cols if c in df]], hide_index=True, use_container_width=True)
    st.caption("Metrics measured from outside the container by MLPerf LoadGen; a null metric was not measured.")
