"""Leaderboard: ranked rows first (fastest first), then participants with no ranked evaluation and why."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from challenges import challenge_names
from dashboards import data
from dashboards.access import require_viewer
from dashboards.format import NOT_MEASURED, number, percent, text

HISTORY_TOP = 10
#: Rows per page of the ranked and unranked tables, and bars of the chart: at 10,000 submissions a
#: leaderboard has ~2,000 rows, and a Markdown table (or a chart) of all of them takes the browser
#: seconds to lay out; the rest are a page away.
PAGE_ROWS = 100
CHART_BARS = 25


def page_of(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """The rows of the page chosen with a "Page" picker under ``key`` (no picker for one page)."""
    pages = max(1, -(-len(df) // PAGE_ROWS))
    if pages == 1:
        return df
    page = st.number_input(f"Page (of {pages}, {PAGE_ROWS} rows each)", min_value=1, max_value=pages, value=1,
                           key=key)
    return df.iloc[(page - 1) * PAGE_ROWS:page * PAGE_ROWS]


def explorer_link(label: str, sid: str) -> str:
    # st.table renders Markdown in cells; a relative link keeps working behind a base URL path.
    label = label.replace("[", "(").replace("]", ")").replace("|", "/")
    return f"[{label}](explorer?submission={sid})"


def ranked_table(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Rank": df["rank"].astype(int).astype(str),
        "Submission": [explorer_link(text(n), s) for n, s in zip(df["display_name"], df["submission_id"])],
        "Participant": df["participant"].map(text),
        "Tokens/s": df["tokens_per_second"].map(lambda v: number(v, 1)),
        "Latency p99 (ms)": df["latency_p99_ms"].map(lambda v: number(v, 1)),
        "TTFT p50 (ms)": df["ttft_p50_ms"].map(lambda v: number(v, 2)),
        "TPOT p50 (ms)": df["tpot_p50_ms"].map(lambda v: number(v, 2)),
        "Accuracy": df["accuracy"].map(lambda v: percent(v, 2)),
        "CV": df["tokens_per_second_cv"].map(lambda v: percent(v, 1)),
        "Runtime": df["runtime"].map(text),
        "Peak mem BW (GB/s)": df["peak_memory_bw_GBs"].map(lambda v: number(v, 1)),
        "Energy (J)": df["energy_joules"].map(lambda v: number(v, 1)),
    })


def unranked_table(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Submission": [explorer_link(text(n), s) for n, s in zip(df["display_name"], df["submission_id"])],
        "Participant": df["participant"].map(text),
        "Status": df["status"].map(text),
        "Reason": df["reason"].map(text),
        "Tokens/s": df["tokens_per_second"].map(lambda v: number(v, 1)),
        "Accuracy": df["accuracy"].map(lambda v: percent(v, 2)),
        "Submitted": df["submitted_at"].map(lambda v: text(v)[:19].replace("T", " ")),
    })


def show_history(challenge: str) -> None:
    """Best tokens/s over time per participant: a step each time one beat their own best."""
    st.subheader("History")
    hist = data.best_history(challenge, top=HISTORY_TOP)
    if hist.empty:
        st.caption("No successful, valid evaluation yet: no history to draw.")
        return
    st.caption(f"Best tokens/s over time of the {HISTORY_TOP} leading participants (successful, valid, "
               "undisturbed evaluations, by submission time): one point each time a participant beat their "
               "own best.")
    chart = alt.Chart(hist).mark_line(interpolate="step-after", point=True).encode(
        x=alt.X("submitted:T", title="submitted"), y=alt.Y("best_tokens_per_second:Q", title="best tokens/s"),
        color=alt.Color("participant:N", title="participant"),
        tooltip=["participant", "submitted:T", "best_tokens_per_second:Q", "submission_id"])
    st.altair_chart(chart.properties(height=300), width="stretch")
    latest = hist.sort_values("submitted").groupby("participant").tail(1).sort_values("best_tokens_per_second",
                                                                            ascending=False)
    st.table(pd.DataFrame({
        "Participant": latest["participant"], "Best tokens/s": latest["best_tokens_per_second"].map(
            lambda v: number(v, 1)),
        "Records": latest["participant"].map(hist.groupby("participant").size()).astype(str),
        "Since": latest["submitted"].map(lambda t: t.strftime("%Y-%m-%d %H:%M") if pd.notna(t) else "—"),
    }), hide_index=True)


def render() -> None:
    require_viewer()   # any logged-in user
    st.title("Leaderboard")
    names = sorted(set(challenge_names()) | set(data.challenges_in_lake()))
    if not names:
        st.info("No challenge is defined yet.")
        return
    challenge = st.selectbox("Challenge", names, index=names.index("efficient-decode")
                             if "efficient-decode" in names else 0)
    df = data.leaderboard(challenge)
    if df.empty or "submission_id" not in df:
        st.info("No leaderboard yet: it appears after the first evaluation of this challenge is scored.")
        return
    ranked, unranked = df[df["rank"].notna()], df[df["rank"].isna()]

    c1, c2, c3 = st.columns(3)
    c1.metric("Ranked", len(ranked))
    c2.metric("Not ranked", len(unranked))
    if len(ranked):
        top = ranked.iloc[0]
        c3.metric("Best tokens/s", number(top["tokens_per_second"], 1), help=f"{top['display_name']}")

    st.subheader(f"Ranked ({len(ranked)})")
    if len(ranked):
        st.table(ranked_table(page_of(ranked, "ranked_page")), hide_index=True)
        fastest = ranked.head(CHART_BARS)
        if len(ranked) > CHART_BARS:
            st.caption(f"The {CHART_BARS} fastest:")
        chart = fastest[["display_name", "tokens_per_second"]].rename(
            columns={"display_name": "submission", "tokens_per_second": "tokens/s"})
        st.bar_chart(chart, x="submission", y="tokens/s", horizontal=True, sort="-tokens/s", x_label="",
                     y_label="tokens/s",
                     height=60 + 32 * len(chart))
    else:
        st.write("No successful, valid evaluation yet.")

    if len(unranked):
        st.subheader(f"Not ranked ({len(unranked)})")
        st.caption("Each participant's latest submission that did not make the board: rejected (wrong tokens), "
                   "failed (build, protocol, crash, oom), timed out, or an invalid measurement.")
        st.table(unranked_table(page_of(unranked, "unranked_page")), hide_index=True)

    show_history(challenge)

    built = data.leaderboard_built_at(challenge)
    st.caption(f"Best successful, valid evaluation per participant, ranked by tokens/s. Metrics are measured "
               f"from outside the container (MLPerf LoadGen, telemetry sidecar); “{NOT_MEASURED}” means the "
               f"host could not measure it, never zero. CV: coefficient of variation of tokens/s over the "
               f"timed repeats." + (f" Built {built:%Y-%m-%d %H:%M:%S} UTC." if built else ""))
