"""`make demo`: submit the example submissions as three demo participants, wait for their scores,
print the leaderboard and the URLs. Expects the platform to be up (`make up`)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intake.cli import leaderboard_table  # noqa: E402
from intake.client import ArenaClient  # noqa: E402
from intake.config import Settings  # noqa: E402
from intake.db import Database  # noqa: E402
from intake.models import User  # noqa: E402
from intake.security import create_user, issue_token  # noqa: E402
from sqlalchemy import select  # noqa: E402
from lake.vocabulary import TERMINAL_STATUSES as TERMINAL, parse_utc_iso  # noqa: E402

EXAMPLES = {"baseline": "demo-baseline", "kv-cache": "demo-kv-cache", "wrong": "demo-wrong"}


def token_for(db: Database, name: str) -> str:
    """A fresh API token for a demo participant, creating the participant on the first demo."""
    with db.session() as s:
        user = s.scalar(select(User).where(User.name == name))
        if user is None:
            _, token = create_user(s, name)
        else:
            _, token = issue_token(s, user, "make demo")
        s.commit()
        return token


def phase_split(timings: dict) -> str:
    """Upload-to-score time split into queue wait, build, run and scoring, from the status events."""
    at = {k: parse_utc_iso(v) for k, v in timings.items()}
    end = next((at[k] for k in TERMINAL if k in at), None)
    steps = [("queue wait", "queued", "building"), ("build", "building", "running"),
             ("run", "running", "scoring"), ("scoring", "scoring", None)]
    parts = []
    for label, a, b in steps:
        stop = at.get(b) if b else end
        if a in at and stop is not None:
            parts.append(f"{label} {(stop - at[a]).total_seconds():.1f} s")
    total = (end - at["queued"]).total_seconds() if end and "queued" in at else None
    return ", ".join(parts) + (f"; upload to score {total:.1f} s" if total is not None else "")


def main() -> int:
    settings = Settings.from_env()
    url = os.environ.get("ARENA_URL", f"http://{settings.host}:{settings.port}")
    db = Database(settings.database_url)
    db.migrate()
    started = time.monotonic()
    tokens = {user: token_for(db, user) for user in EXAMPLES.values()}
    ids = {}
    for example, user in EXAMPLES.items():
        with ArenaClient(url, tokens[user]) as client:
            answer = client.submit(ROOT / "examples" / example)
            ids[example] = (answer["id"], user)
            print(f"submitted examples/{example:9} as {user:14} -> {answer['id']} ({answer['status']})")
    print("waiting for the scores (builds and sandboxed runs, one at a time) ...")
    pending = dict(ids)
    while pending:
        for example, (sid, user) in list(pending.items()):
            with ArenaClient(url, tokens[user]) as client:
                st = client.status(sid)
            if st["status"] in TERMINAL:
                m = (st.get("result") or {}).get("metrics") or {}
                print(f"  {example:9} {st['status']:8} {st.get('reason') or '':9} "
                      f"tokens/s={m.get('tokens_per_second')} accuracy={m.get('accuracy')}")
                print(f"            {phase_split(st.get('timings') or {})}")
                del pending[example]
        if pending:
            time.sleep(3)
    # the leaderboard asset runs after each evaluation; wait until it lists all three
    with ArenaClient(url, tokens[EXAMPLES["kv-cache"]]) as client:
        for _ in range(120):
            board = client.leaderboard("efficient-decode")
            if {sid for sid, _ in ids.values()} <= {row["submission_id"] for row in board}:
                break
            time.sleep(2)
    print()
    print(leaderboard_table(board))
    print()
    print(f"demo took {time.monotonic() - started:.0f} s")
    print(f"Intake API and web form:  {url}/   (OpenAPI: {url}/docs)")
    print(f"  log in to the web form as demo-kv-cache with the API token {tokens[EXAMPLES['kv-cache']]}")
    print(f"Dagster UI:               http://127.0.0.1:{os.environ.get('ARENA_DAGSTER_PORT', 3000)}/")
    if os.environ.get("ARENA_DAGSTER_MODE") == "fleet":
        return 0   # scripts/fleet_demo.py: no dashboards, and it stops what it started itself
    print(f"Streamlit dashboards:     http://{os.environ.get('ARENA_INTERNAL_HOST', '127.0.0.1')}:"
          f"{os.environ.get('ARENA_STREAMLIT_PORT', 8501)}/   (log in to the web form first; "
          f"admin pages: `arena admin set-admin demo-kv-cache`)")
    print("Stop everything with `make down`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
