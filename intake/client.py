"""A typed client of the intake REST API, used by the `arena` CLI and by scripts.

    client = ArenaClient("http://127.0.0.1:8000", token)
    sub = client.submit("examples/naive")          # a directory is zipped deterministically first
    final = client.wait(sub["id"], timeout=1800)
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from lake.vocabulary import TERMINAL_STATUSES as TERMINAL


class ArenaError(Exception):
    """An answer in the API's error shape (or a transport failure, code "unreachable")."""

    def __init__(self, code: str, message: str, details: list | None = None, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.details, self.status = code, message, details or [], status


class ProgressReader:
    """A file wrapper that reports (bytes sent, total) to a callback as httpx reads it."""

    def __init__(self, fh, total: int, on_progress):
        self.fh, self.total, self.sent, self.on_progress = fh, total, 0, on_progress

    def read(self, size: int = -1) -> bytes:
        chunk = self.fh.read(size)
        self.sent += len(chunk)
        self.on_progress(self.sent, self.total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:   # lets httpx size the body up front
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()


class ArenaClient:
    def __init__(self, url: str, token: str | None, timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ArenaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ArenaError("unreachable", f"{self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                raise ArenaError(err["code"], err["message"], err.get("details"), response.status_code)
            except (ValueError, KeyError, TypeError):
                raise ArenaError(f"http_{response.status_code}", response.text[:500] or response.reason_phrase,
                                 status=response.status_code) from None
        return response.json()

    def submit(self, path: str | Path, challenge: str | None = None, on_progress=None) -> dict:
        """Upload a zip, or a directory zipped deterministically (same files, same sha256)."""
        path = Path(path)
        data = {"challenge": challenge} if challenge else {}
        if path.is_dir():
            from intake.packaging import PackagingError, zip_directory
            with tempfile.TemporaryDirectory(prefix="arena-submit-") as tmp:
                try:
                    zip_path = zip_directory(path, Path(tmp) / f"{path.resolve().name}.zip")
                except PackagingError as exc:
                    raise ArenaError("packaging", str(exc)) from exc
                return self._upload(zip_path, data, on_progress)
        if not path.is_file():
            raise ArenaError("not_found", f"{path}: no such file or directory")
        return self._upload(path, data, on_progress)

    def _upload(self, zip_path: Path, data: dict, on_progress=None) -> dict:
        """`on_progress(sent, total)` is called as the zip's bytes are read into the request."""
        with open(zip_path, "rb") as fh:
            body = ProgressReader(fh, zip_path.stat().st_size, on_progress) if on_progress else fh
            return self._call("POST", "/api/v1/submissions",
                              files={"file": (zip_path.name, body, "application/zip")}, data=data)

    def status(self, sid: str) -> dict:
        return self._call("GET", f"/api/v1/submissions/{sid}")

    def wait(self, sid: str, timeout: float = 3600.0, poll: float = 2.0) -> dict:
        """Poll until the submission reaches a terminal status; ArenaError("timeout") past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(sid)
            if current["status"] in TERMINAL:
                return current
            if time.monotonic() > deadline:
                raise ArenaError("wait_timeout", f"{sid} still {current['status']} after {timeout:g} s")
            time.sleep(poll)

    def logs(self, sid: str, follow: bool = False) -> Iterator[dict]:
        """Log events: {"phase", "line"} for each line, then (when following) {"status", "reason", "final"}
        for each status change until the final one."""
        if not follow:
            answer = self._call("GET", f"/api/v1/submissions/{sid}/logs")
            yield from answer["lines"]
            return
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        ws_url = "ws" + self.url[len("http"):] + f"/api/v1/submissions/{sid}/logs"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        lines_seen = 0
        try:
            while True:
                with connect(ws_url, additional_headers=headers, open_timeout=30) as ws:
                    skip, renewed = lines_seen, False  # a new socket sends the history again
                    for message in ws:
                        event = json.loads(message)
                        if event.get("closed") == "lifetime":  # the server's socket lifetime: reconnect
                            renewed = True
                            break
                        if "line" in event:
                            if skip:
                                skip -= 1
                                continue
                            lines_seen += 1
                        yield event
                if not renewed:
                    return
        except InvalidStatus as exc:
            status = exc.response.status_code
            try:
                err = json.loads(exc.response.body)["error"]
            except (ValueError, KeyError, TypeError):
                raise ArenaError(f"http_{status}", "the log stream was refused", status=status) from None
            raise ArenaError(err["code"], err["message"], err.get("details"), status) from None
        except OSError as exc:
            raise ArenaError("unreachable", f"{ws_url}: {exc}") from exc

    def leaderboard(self, challenge: str) -> list[dict]:
        return self._call("GET", f"/api/v1/leaderboard/{challenge}")["rows"]

    def list_submissions(self, everyone: bool = False, limit: int = 50) -> list[dict]:
        params = {"limit": limit} | ({"all": "true"} if everyone else {})
        return self._call("GET", "/api/v1/submissions", params=params)["items"]

    def rerun(self, sid: str) -> dict:
        return self._call("POST", f"/api/v1/admin/submissions/{sid}/rerun")

    def health(self) -> dict:
        return self._call("GET", "/healthz")
