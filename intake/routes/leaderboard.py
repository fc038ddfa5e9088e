"""/api/v1/leaderboard: public, read from the lake's last built leaderboard."""
from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder

from intake.errors import ApiError
from intake.submissions import known_challenges
from lake.leaderboard import read_leaderboard

router = APIRouter(prefix="/api/v1/leaderboard", tags=["leaderboard"])


def _clean(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


@router.get("/{challenge}")
def leaderboard(challenge: str, request: Request) -> dict:
    if challenge not in known_challenges():
        raise ApiError(404, "not_found", f"no challenge {challenge!r}",
                       [{"rule": "challenge", "value": challenge, "message": f"one of: {', '.join(known_challenges())}"}])
    rows = read_leaderboard(request.app.state.settings.lake, challenge)
    return {"challenge": challenge, "rows": jsonable_encoder([{k: _clean(v) for k, v in r.items()} for r in rows])}
