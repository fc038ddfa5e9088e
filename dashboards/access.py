"""Who is looking: the dashboards trust only a logged-in intake session.

The browser sends intake's signed session cookie to the dashboards too (cookies are scoped by host, not
port; in production both sit behind one reverse proxy, see README "Security model"). It is checked with
the same function intake uses, ``intake.sessions.user_for_cookie``: signature with ARENA_SECRET_KEY,
then the server-side session row, so a logout or a revoked token shuts the dashboards at the next rerun.

- anonymous: nothing but a pointer to intake's login page;
- any logged-in user: the leaderboard, and their own runs in the explorer;
- admins: every run, the admin page, host paths.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from intake.sessions import COOKIE


@dataclass(frozen=True)
class Viewer:
    name: str
    is_admin: bool

    def may_see(self, participant: str | None) -> bool:
        return self.is_admin or (participant is not None and participant == self.name)


@st.cache_resource(show_spinner=False)
def _intake():
    """Intake's settings and database, once per Streamlit process (read only: nothing is migrated)."""
    from intake.config import Settings
    from intake.db import Database

    settings = Settings.from_env()
    return settings, Database(settings.database_url)


def viewer() -> Viewer | None:
    from intake.sessions import user_for_cookie

    settings, db = _intake()
    cookie = st.context.cookies.get(COOKIE)
    with db.session() as session:
        user = user_for_cookie(session, settings.secret_key, cookie)
        return Viewer(user.name, bool(user.is_admin)) if user is not None else None


def login_url() -> str:
    return f"{_intake()[0].public_url}/login"


def require_viewer() -> Viewer:
    """The logged-in viewer, or a refusal that stops the page here."""
    who = viewer()
    if who is None:
        st.title("Decode Arena")
        st.error("You are not logged in: the dashboards need an intake session "
                 "(rule: dashboards_login_required).", icon=":material/lock:")
        st.markdown(f"Log in at [{login_url()}]({login_url()}), then reload this page.")
        st.stop()
    return who


def require_admin() -> Viewer:
    who = require_viewer()
    if not who.is_admin:
        st.title("Admin")
        st.error(f"The admin page is for administrators only; {who.name} is not one "
                 "(rule: dashboards_admin_only).", icon=":material/block:")
        st.stop()
    return who
