"""Accepting, finding and describing submissions: the intake core that routes, web form and CLI share.

Before the body is read, ``admit`` applies the rate limit, the daily quota and the unfinished cap and
records the attempt (refused uploads count). Accepting is then one database transaction per upload:
lock the uploader's row (so duplicate and unfinished checks cannot race), answer duplicates, then write
the zip and its marker to the bucket and the row to the lake, and commit. Nothing reaches the bucket
for a refused upload.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from ulid import ULID

from intake.config import Settings
from intake.db import Database
from intake.errors import ApiError
from intake.models import Submission, UploadAttempt, User, as_utc, utcnow
from lake.bucket import Bucket, Marker
from lake.vocabulary import TERMINAL_STATUSES as TERMINAL, utc_iso
from lake.tables import Lake

DAY = timedelta(days=1)
CONCURRENCY_RETRY_S = 30


@dataclass(frozen=True)
class Accepted:
    submission: Submission
    created: bool  # False: the same zip from the same user was already submitted


class Submissions:
    def __init__(self, settings: Settings, db: Database):
        self.settings = settings
        self.db = db
        self.bucket = Bucket(settings.bucket)
        self.lake = Lake(settings.lake)

    def warm_up(self) -> None:
        """Load, at startup, what the first upload would otherwise load while the first burst of uploads
        waits on it (pyarrow's first table alone took 0.25-0.6 s here): the validation package, the
        default challenge's rules, and the lake's table builder and Parquet writer (nothing is written)."""
        from intake.validation import validate_zip  # noqa: F401
        try:
            rules_for(self.settings.default_challenge)
        except KeyError:
            pass  # an unknown default challenge is refused per upload, with its own message
        self.lake.warm_up()

    # -- accepting -------------------------------------------------------------------------
    def validate(self, zip_path: Path, requested_challenge: str | None):
        """Validate against the rules of the challenge; arena.toml may name the challenge when the
        request does not. Raises ApiError(422) listing every problem."""
        from intake.validation import SubmissionRejected, validate_zip

        challenge = requested_challenge or self.settings.default_challenge
        check_challenge(challenge)
        try:
            validated = validate_zip(zip_path, rules=rules_for(challenge))
            if not requested_challenge and validated.challenge and validated.challenge != challenge:
                challenge = validated.challenge
                check_challenge(challenge)
                validated = validate_zip(zip_path, rules=rules_for(challenge))
        except SubmissionRejected as exc:
            details = [{"rule": p.rule, "value": _jsonable(p.value), "message": p.message} for p in exc.problems]
            summary = "; ".join(f"{p.rule}: {p.message}" for p in exc.problems)
            raise ApiError(422, "submission_rejected", f"the submission was refused: {summary}", details)
        return challenge, validated

    def accept(self, user_id: int, zip_path: Path, requested_challenge: str | None = None,
               attempt_id: int | None = None) -> Accepted:
        """Validate and accept an upload. ``attempt_id`` (from ``admit``) is settled as "accepted" or
        "duplicate" in the same transaction as the submission row: one commit fewer per upload, and an
        attempt is never left "pending" behind a committed submission."""
        challenge, validated = self.validate(zip_path, requested_challenge)
        handed_over = []   # the submission whose zip and marker are in the bucket, until the commit holds
        try:
            return self._accept(user_id, zip_path, challenge, validated, handed_over, attempt_id)
        except BaseException:
            # the database lost the row (a failed commit: PostgreSQL restarting) after the bucket got the
            # marker: withdraw it, or the sensor would evaluate a submission intake has no record of
            for sub in handed_over:
                self._withdraw(sub)
            raise

    def _accept(self, user_id: int, zip_path: Path, challenge: str, validated, handed_over: list,
                attempt_id: int | None) -> Accepted:
        with self.db.session() as session, session.begin():
            now = utcnow()

            def settled(accepted: Accepted) -> Accepted:
                if attempt_id is not None:
                    session.execute(update(UploadAttempt).where(UploadAttempt.id == attempt_id)
                                    .values(outcome="accepted" if accepted.created else "duplicate"))
                return accepted
            session.execute(update(User).where(User.id == user_id).values(last_submitted_at=now))
            user = session.get(User, user_id)
            existing = session.scalar(select(Submission).where(
                Submission.user_id == user_id, Submission.challenge == challenge,
                Submission.sha256 == validated.sha256))
            if existing is not None:
                if self.bucket.storage.exists(self.bucket.marker_key(existing.challenge, existing.id)):
                    return settled(Accepted(existing, created=False))
                # its row committed although the commit's answer was lost (the database went away
                # mid-commit), so accept() withdrew the marker: this retry hands it over, once
                existing.user = user
                self._hand_over(existing, zip_path, handed_over)
                return settled(Accepted(existing, created=True))
            self._check_unfinished(session, user_id)  # again, under the lock: a race since admit()
            sub = Submission(id=str(ULID()), user_id=user_id, challenge=challenge, sha256=validated.sha256,
                             display_name=validated.display_name or user.name,
                             size_bytes=validated.compressed_bytes, created_at=now)
            sub.user = user
            session.add(sub)
            session.flush()
            self._hand_over(sub, zip_path, handed_over)
            return settled(Accepted(sub, created=True))

    def _hand_over(self, sub: Submission, zip_path: Path, handed_over: list) -> None:
        """Zip and marker into the bucket, the row into the lake (inside the caller's transaction)."""
        created_at = iso(sub.created_at)
        marker = Marker(id=sub.id, challenge=sub.challenge, user=sub.user.name, sha256=sub.sha256,
                        created_at=created_at, queue=queue_of(sub.challenge), display_name=sub.display_name)
        handed_over.append(sub)   # from here on a failure withdraws it (accept)
        self.bucket.put_submission(marker, zip_path)
        self.lake.write_submission({"id": sub.id, "challenge": sub.challenge, "user": sub.user.name,
                                    "display_name": sub.display_name, "sha256": sub.sha256,
                                    "created_at": created_at, "size_bytes": sub.size_bytes})

    # -- before anything is read: rate limit and quota -----------------------------------------
    def admit(self, user_id: int) -> int:
        """Run before the body is read or validated: refuse (429) when the user is over the upload rate
        limit, the daily quota or the unfinished cap; else record the attempt and return its id.

        Every admitted attempt counts, refused ones too; only an upload answered as a duplicate of an
        earlier one gives its daily-quota slot back (it started nothing)."""
        s = self.settings
        with self.db.session() as session, session.begin():
            now = utcnow()
            # the user's row lock serialises their attempts: two cannot both take the last slot
            session.execute(update(User).where(User.id == user_id).values(last_submitted_at=now))
            window = timedelta(seconds=s.upload_rate_window_s)
            recent = session.execute(select(func.count(), func.min(UploadAttempt.started_at)).where(
                UploadAttempt.user_id == user_id, UploadAttempt.started_at > now - window)).one()
            if recent[0] >= s.upload_rate_limit:
                retry = max(1, math.ceil((as_utc(recent[1]) + window - now).total_seconds()))
                raise ApiError(429, "rate_limited", f"at most {s.upload_rate_limit} uploads per "
                               f"{s.upload_rate_window_s} s", [{"rule": "upload_rate_limit", "value": s.upload_rate_limit,
                                                                "message": f"try again in {retry} s"}],
                               {"Retry-After": str(retry)})
            daily = session.execute(select(func.count(), func.min(UploadAttempt.started_at)).where(
                UploadAttempt.user_id == user_id, UploadAttempt.started_at > now - DAY,
                UploadAttempt.outcome != "duplicate")).one()
            if daily[0] >= s.daily_quota:
                retry = max(1, math.ceil((as_utc(daily[1]) + DAY - now).total_seconds()))
                raise ApiError(429, "quota_exceeded", f"daily quota of {s.daily_quota} uploads reached "
                               "(refused uploads count)", [{"rule": "daily_quota", "value": s.daily_quota,
                                                            "message": f"try again in {retry} s"}],
                               {"Retry-After": str(retry)})
            self._check_unfinished(session, user_id)
            attempt = UploadAttempt(user_id=user_id, started_at=now, outcome="pending")
            session.add(attempt)
            session.flush()
            return attempt.id

    def settle(self, attempt_id: int, outcome: str) -> None:
        """Record how an admitted attempt ended: "accepted", "duplicate" or the refusing rule."""
        with self.db.session() as session, session.begin():
            session.execute(update(UploadAttempt).where(UploadAttempt.id == attempt_id)
                            .values(outcome=outcome[:100]))

    def _check_unfinished(self, session: Session, user_id: int) -> None:
        s = self.settings
        recent = session.scalars(select(Submission.id).where(Submission.user_id == user_id)
                                 .order_by(Submission.id.desc()).limit(max(50, s.max_concurrent * 10))).all()
        unfinished = [sid for sid in recent if self.status(sid)["status"] not in TERMINAL]
        if len(unfinished) >= s.max_concurrent:
            raise ApiError(429, "too_many_unfinished",
                           f"{len(unfinished)} of your submissions are still being evaluated "
                           f"(at most {s.max_concurrent} at once)",
                           [{"rule": "max_concurrent", "value": s.max_concurrent, "message": ", ".join(unfinished)}],
                           {"Retry-After": str(CONCURRENCY_RETRY_S)})

    def _withdraw(self, sub: Submission) -> None:
        """Undo a half-written hand-over (marker first: the sensor must not see a marker without a zip)."""
        self.bucket.withdraw(sub.challenge, sub.id)
        self.lake.delete_submission(sub.challenge, sub.id)

    # -- housekeeping ----------------------------------------------------------------------
    def sweep(self, older_than_s: float, window_s: float = 7 * 86400) -> dict:
        """What a killed intake or a lost commit answer left behind, older than ``older_than_s``:
        spool files of uploads that never finished (``$ARENA_HOME/tmp/upload-*.zip``; a live upload
        rewrites its file, so an old one has no process behind it), and rows with neither a marker nor
        a status: their commit went through while its answer was lost, accept()
        withdrew the marker and the zip, and the client (told 5xx) never retried. Such a row was never
        acknowledged and holds nothing to evaluate; it is deleted, so it is not listed `queued` for
        ever. Rows created in the last ``window_s`` are looked at. Returns what was removed."""
        import time
        cutoff = time.time() - older_than_s
        spool = [f for f in (self.settings.home / "tmp").glob("upload-*.zip") if f.stat().st_mtime < cutoff]
        for f in spool:
            f.unlink(missing_ok=True)
        orphans = []
        newest = utcnow() - timedelta(seconds=older_than_s)
        with self.db.session() as session, session.begin():
            rows = session.scalars(select(Submission).where(
                Submission.created_at < newest,
                Submission.created_at >= newest - timedelta(seconds=window_s))).all()
            for sub in rows:
                # every hand-over writes the marker and then the status; a withdrawal removes both
                if (self.bucket.status(sub.id) is None
                        and not self.bucket.storage.exists(self.bucket.marker_key(sub.challenge, sub.id))):
                    orphans.append(sub.id)
                    session.delete(sub)
        return {"spool_files": [f.name for f in spool], "orphan_rows": orphans}

    # -- reading ---------------------------------------------------------------------------
    def visible(self, session: Session, user: User, sid: str) -> Submission:
        """The submission if ``user`` may see it; others' submissions are 404, not 403."""
        sub = session.get(Submission, sid)
        if sub is None or (sub.user_id != user.id and not user.is_admin):
            raise ApiError(404, "not_found", f"no submission {sid}")
        return sub

    def listing(self, session: Session, user: User, everyone: bool, limit: int, before: str | None):
        query = select(Submission).order_by(Submission.id.desc()).limit(limit)
        if not (everyone and user.is_admin):
            query = query.where(Submission.user_id == user.id)
        if before:
            query = query.where(Submission.id < before)
        return session.scalars(query).all()

    def status(self, sid: str) -> dict:
        return self.bucket.status(sid) or {"status": "queued", "reason": None, "timings": {}}

    def describe(self, sub: Submission, with_result: bool = True) -> dict:
        status = self.status(sub.id)
        return {"id": sub.id, "status": status.get("status"), "reason": status.get("reason"),
                "challenge": sub.challenge, "user": sub.user.name, "display_name": sub.display_name,
                "sha256": sub.sha256, "size_bytes": sub.size_bytes, "created_at": iso(sub.created_at),
                "timings": status.get("timings", {}),
                "result": self.lake.read_result(sub.challenge, sub.id) if with_result else None,
                "urls": self.urls(sub.id)}

    def urls(self, sid: str) -> dict:
        base = self.settings.public_url
        ws = "ws" + base[len("http"):] if base.startswith("http") else base
        return {"self": f"{base}/api/v1/submissions/{sid}", "logs": f"{ws}/api/v1/submissions/{sid}/logs",
                "web": f"{base}/submissions/{sid}"}


def iso(moment) -> str:
    return utc_iso(as_utc(moment))


def _jsonable(value):
    return value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)


def known_challenges() -> list[str]:
    from challenges import challenge_names
    return list(challenge_names())


def check_challenge(name: str) -> None:
    names = known_challenges()
    if name not in names:
        raise ApiError(422, "unknown_challenge", f"no challenge {name!r}",
                       [{"rule": "challenge", "value": name, "message": f"one of: {', '.join(names)}"}])


def rules_for(challenge: str):
    from challenges import load_challenge
    from intake.validation import ValidationRules
    return ValidationRules(allowed_base_images=tuple(load_challenge(challenge).allowed_base_images))


def queue_of(challenge: str) -> str:
    from challenges import load_challenge
    return load_challenge(challenge).spec.queue
