"""`arena`: submit, follow and rank submissions from a terminal (DESIGN.md, "Commands and ports").

The server and token come from ARENA_URL / ARENA_TOKEN when set, else from `arena login`'s
~/.config/arena/config.toml (mode 0600).
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tomllib
from datetime import datetime, timezone
from pathlib import Path

from intake.client import ArenaClient, ArenaError

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "arena" / "config.toml"


def load_login() -> tuple[str, str | None]:
    stored: dict = {}
    if config_path().exists():
        stored = tomllib.loads(config_path().read_text())
    url = os.environ.get("ARENA_URL") or stored.get("url") or DEFAULT_URL
    token = os.environ.get("ARENA_TOKEN") or stored.get("token")
    return url, token


def save_login(url: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:  # JSON string escapes are valid TOML basic strings
        fh.write(f"url = {json.dumps(url)}\ntoken = {json.dumps(token)}\n")
    os.chmod(path, 0o600)
    return path


def client() -> ArenaClient:
    url, token = load_login()
    if not token:
        raise ArenaError("unauthorized", "no API token: run `arena login` or set ARENA_TOKEN")
    return ArenaClient(url, token)


# -- printing -------------------------------------------------------------------------------------
def log_line_text(line: str) -> str:
    """A stored log line starts with its unix time; show it as UTC time of day."""
    stamp, sep, rest = line.partition(" ")
    try:
        when = datetime.fromtimestamp(float(stamp), timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return line
    return f"{when}{sep}{rest}"


def print_log_event(event: dict) -> None:
    if "line" in event:
        print(f"[{event['phase']}] {log_line_text(event['line'])}", flush=True)
    elif event.get("status"):
        reason = f" ({event['reason']})" if event.get("reason") else ""
        print(f"-- status: {event['status']}{reason}", flush=True)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def fmt(value, digits: int = 2):
    return f"{value:.{digits}f}" if isinstance(value, float) else value


def leaderboard_table(rows: list[dict]) -> str:
    ranked = [r for r in rows if r.get("rank") is not None]
    unranked = [r for r in rows if r.get("rank") is None]
    out = [table(["rank", "participant", "submission", "tokens/s", "p99 ms", "accuracy"],
                 [[r["rank"], r.get("display_name") or r.get("participant"), r.get("submission_id"),
                   fmt(r.get("tokens_per_second")), fmt(r.get("latency_p99_ms"), 1), fmt(r.get("accuracy"), 4)]
                  for r in ranked])]
    if unranked:
        out += ["", "not ranked:", table(["participant", "submission", "status", "reason"],
                                         [[r.get("display_name") or r.get("participant"), r.get("submission_id"),
                                           r.get("status"), r.get("reason")] for r in unranked])]
    return "\n".join(out)


# -- commands -------------------------------------------------------------------------------------
def upload_progress(sent: int, total: int) -> None:
    """A one-line progress bar on stderr."""
    width = 30
    done = int(width * sent / total) if total else width
    print(f"\ruploading [{'#' * done}{'.' * (width - done)}] {sent / 1024:.0f}/{total / 1024:.0f} KiB",
          end="" if sent < total else "\n", file=sys.stderr, flush=True)


def cmd_submit(args) -> int:
    with client() as c:
        answer = c.submit(args.path, challenge=args.challenge,
                          on_progress=upload_progress if sys.stderr.isatty() else None)
        note = " (already submitted: same zip)" if answer.get("duplicate") else ""
        print(f"{answer['id']} {answer['status']}{note}")
        print(f"  web: {answer['urls']['web']}")
        if not args.follow:
            return 0
        for event in c.logs(answer["id"], follow=True):
            print_log_event(event)
        final = c.status(answer["id"])
        print(json.dumps(final["result"] or {"status": final["status"], "reason": final["reason"]}, indent=2))
        return 0 if final["status"] == "success" else 2


def cmd_status(args) -> int:
    with client() as c:
        answer = c.status(args.id)
    print(json.dumps(answer, indent=2))
    return 0


def cmd_logs(args) -> int:
    with client() as c:
        for event in c.logs(args.id, follow=args.follow):
            print_log_event(event)
    return 0


def cmd_leaderboard(args) -> int:
    url, token = load_login()
    challenge = args.challenge or os.environ.get("ARENA_DEFAULT_CHALLENGE", "efficient-decode")
    with ArenaClient(url, token) as c:
        rows = c.leaderboard(challenge)
    print(f"leaderboard: {challenge}")
    print(leaderboard_table(rows) if rows else "(no evaluations yet)")
    return 0


def cmd_login(args) -> int:
    url = (args.url or os.environ.get("ARENA_URL") or load_login()[0]).rstrip("/")
    token = args.token or getpass.getpass(f"API token for {url} (make one on {url}/tokens): ").strip()
    with ArenaClient(url, token) as c:
        c.list_submissions(limit=1)  # proves the token before storing it
    print(f"logged in to {url}; saved to {save_login(url, token)}")
    return 0


def cmd_create_user(args) -> int:
    from intake.config import Settings
    from intake.db import Database
    from intake.security import create_user

    db = Database(Settings.from_env().database_url)
    db.migrate()
    try:
        with db.session() as session, session.begin():
            user, token = create_user(session, args.name, admin=args.admin, email=args.email)
    except ValueError as exc:
        raise ArenaError("conflict", str(exc)) from exc
    finally:
        db.dispose()
    print(f"created {'admin ' if args.admin else ''}user {args.name}; API token (shown once):", file=sys.stderr)
    print(token)
    return 0


def cmd_set_admin(args) -> int:
    """Grant (or with --revoke take back) admin: the only way besides `create-user --admin`; an e-mail
    address never makes an admin."""
    from sqlalchemy import select

    from intake.config import Settings
    from intake.db import Database
    from intake.models import User

    db = Database(Settings.from_env().database_url)
    db.migrate()
    try:
        with db.session() as session, session.begin():
            user = session.scalar(select(User).where(User.name == args.name))
            if user is None:
                raise ArenaError("not_found", f"no user {args.name!r} (users appear at their first login)")
            user.is_admin = not args.revoke
    finally:
        db.dispose()
    print(f"{args.name} is {'no longer ' if args.revoke else ''}an admin")
    return 0


def add_set_admin(admin) -> None:
    s = admin.add_parser("set-admin", help="make a user an admin (--revoke: take it back)")
    s.add_argument("name", help="the user's name, as shown after they log in")
    s.add_argument("--revoke", action="store_true")
    s.set_defaults(func=cmd_set_admin)


def cmd_rerun(args) -> int:
    with client() as c:
        answer = c.rerun(args.id)
    print(f"rerun requested: {answer['rerun_key']}")
    return 0


def cmd_prompts(args) -> int:
    """Operators: regenerate an evaluation's prompts from the operator-only record (its secret seed)
    and verify them against the stored result's `measurement.prompt_set`."""
    import json as _json

    from challenges import load_challenge
    from lake.config import StorageSettings
    from lake.operator import OperatorStore
    from lake.tables import Lake
    from sandbox.evaluate import regenerate_prompts, verify_prompts

    try:
        record = OperatorStore().read(args.id, args.attempt)
    except KeyError as exc:
        raise ArenaError("not_found", str(exc.args[0])) from exc
    challenge = load_challenge(record["challenge"])
    lake = Lake(StorageSettings.from_env().lake)
    result = lake.read_result(challenge.name, args.id, record["attempt"])
    ok, digest, count, stored = verify_prompts(challenge, record, result)
    if args.show:
        from sandbox.evaluate import Workload
        for p in regenerate_prompts(Workload.for_challenge(challenge, seed=int(record["seed"])), record):
            print(_json.dumps(p, separators=(",", ":")))
    print(f"submission {args.id} attempt {record['attempt']}: {count} prompts regenerated, {digest}; "
          f"stored {stored}: {'MATCH' if ok else 'MISMATCH'}", file=sys.stderr)
    return 0 if ok else 1


def cmd_worker_start(args) -> int:
    """A fleet worker of one pool on this host (orchestration/worker_process.py); never returns."""
    from orchestration.pools import worker_named
    from orchestration.worker_process import start
    from sandbox.devices import Devices
    try:
        if args.worker:
            spec = worker_named(args.worker)
            pool, devices, name = spec.pool, spec.devices, spec.name
        else:
            if not args.pool:
                raise ValueError("give --worker NAME (from the pools file) or --pool NAME --devices ...")
            pool, devices, name = args.pool, Devices.parse(args.devices) if args.devices else None, args.name
        start(pool, devices, name)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arena", description="Decode Arena: submit decoders, follow them, rank them.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="upload a submission directory or zip")
    s.add_argument("path", help="a directory (zipped deterministically) or a .zip")
    s.add_argument("--challenge", help="challenge name (default: arena.toml, then the server's default)")
    s.add_argument("--follow", action="store_true", help="stream the logs until the submission finishes")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("status", help="a submission's status and result as JSON")
    s.add_argument("id")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("logs", help="a submission's build and run logs")
    s.add_argument("id")
    s.add_argument("--follow", action="store_true", help="keep streaming until the submission finishes")
    s.set_defaults(func=cmd_logs)

    s = sub.add_parser("leaderboard", help="print a challenge's leaderboard")
    s.add_argument("challenge", nargs="?")
    s.set_defaults(func=cmd_leaderboard)

    s = sub.add_parser("login", help="store the server URL and your API token")
    s.add_argument("--url", help=f"server URL (default: ARENA_URL, the stored one, or {DEFAULT_URL})")
    s.add_argument("--token", help="API token (asked for when omitted)")
    s.set_defaults(func=cmd_login)

    admin = sub.add_parser("admin", help="operator commands").add_subparsers(dest="admin_command", required=True)
    s = admin.add_parser("create-user", help="create a user in the database and print an API token once")
    s.add_argument("name")
    s.add_argument("--admin", action="store_true")
    s.add_argument("--email")
    s.set_defaults(func=cmd_create_user)
    add_set_admin(admin)
    s = admin.add_parser("rerun", help="evaluate a submission again")
    s.add_argument("id")
    s.set_defaults(func=cmd_rerun)

    s = admin.add_parser("prompts", help="regenerate an evaluation's prompts and verify its prompt_set digest")
    s.add_argument("id")
    s.add_argument("--attempt", type=int, default=None, help="the attempt (default: the latest)")
    s.add_argument("--show", action="store_true", help="print every prompt (token ids), one per line")
    s.set_defaults(func=cmd_prompts)

    worker = sub.add_parser("worker", help="fleet mode: run evaluations of a pool on this host").add_subparsers(
        dest="worker_command", required=True)
    s = worker.add_parser("start", help="start a Celery worker bound to its devices (ARENA_DAGSTER_MODE=fleet)")
    s.add_argument("--worker", help="a [[worker]] name of the pools file (gives pool, devices and name)")
    s.add_argument("--pool", help="the pool (a challenge's queue) this worker serves; `control` runs device-less jobs")
    s.add_argument("--devices", help="cpuset=CPUS and/or gpus=UUID[+UUID...], e.g. cpuset=2-3 or gpus=GPU-5b2c...")
    s.add_argument("--name", help="the Celery worker name (default POOL-PID)")
    s.set_defaults(func=cmd_worker_start)

    from lake.commands import add_lake_commands
    add_lake_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ArenaError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        for detail in exc.details:
            if isinstance(detail, dict):
                print(f"  - {detail.get('rule', '')}: {detail.get('message', '')}", file=sys.stderr)
            else:
                print(f"  - {detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
