"""One small storage interface over fsspec, for the bucket and the lake (DESIGN.md, "Lake layout").

``Storage("file:///var/arena/lake")`` is the embedded default; ``Storage("s3://bucket/prefix")`` is the
production one (s3fs; ``ARENA_S3_ENDPOINT_URL`` points it at any S3-compatible server, credentials come
from the usual ``AWS_*`` variables). Everything above this module speaks in keys ("a/b/c.json"),
never in paths: the same code runs on a local disk and on an object store.

The operations are the ones the platform needs, each with the guarantee it relies on:
- ``put`` / ``put_file``: atomic. On a file system a temporary sibling is renamed over the key; on S3 a
  single PUT (or a completed multipart upload) is atomic by itself. A reader never sees half a file.
- ``get`` / ``open``: read a whole key, or stream it.
- ``list_after(prefix, start_after)``: keys under a prefix in lexicographic order, strictly after
  ``start_after`` (S3's ``StartAfter``). Keys named by ULIDs list in time order, so a sensor lists only
  what is new instead of globbing everything.
- ``append``: add a line to a log. On a file system it is an O_APPEND write; on S3 (no appends) it
  rewrites the object, which is fine for logs with one writer at a time.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator
from urllib.parse import urlparse

import fsspec


@dataclass(frozen=True)
class Entry:
    """One listed key: its name under the storage root, size and a version tag (mtime or ETag)."""
    key: str
    size: int
    tag: str


def _s3_options() -> dict:
    endpoint = os.environ.get("ARENA_S3_ENDPOINT_URL")
    options: dict[str, Any] = {}
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint,
                                    "region_name": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    return options


class Storage:
    """Keys under one root URL (``file://…`` or ``s3://bucket/prefix``)."""

    def __init__(self, url: str | Path, **options):
        url = str(url)
        parsed = urlparse(url)
        if parsed.scheme in ("", "file"):
            local = Path(parsed.netloc + parsed.path if parsed.scheme else url).resolve()
            self.scheme, self.url = "file", f"file://{local}"
            self.fs = fsspec.filesystem("file")
            self.root = str(local)
        elif parsed.scheme in ("s3", "s3a"):
            import s3fs  # noqa: F401  (the s3 implementation fsspec loads)
            self.scheme, self.url = "s3", f"s3://{parsed.netloc}{parsed.path}".rstrip("/")
            self.fs = fsspec.filesystem("s3", **(_s3_options() | options))
            self.root = f"{parsed.netloc}{parsed.path}".rstrip("/")
        else:
            raise ValueError(f"storage URL {url!r}: scheme {parsed.scheme!r} is not supported "
                             "(file:// on one machine, s3:// for an object store)")

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # -- names -----------------------------------------------------------------------------------
    def _p(self, key: str) -> str:
        if ".." in key.split("/") or "\\" in key or "\0" in key:
            raise ValueError(f"storage key {key!r}: '..', backslashes and NUL are refused (keys stay under the root)")
        return f"{self.root}/{key.lstrip('/')}" if key else self.root

    def uri(self, key: str) -> str:
        """The key as DuckDB reads it: a local path on file://, an s3:// URL (via register_filesystem)."""
        return self._p(key) if self.scheme == "file" else f"s3://{self._p(key)}"

    def child(self, prefix: str) -> "Storage":
        """A storage rooted at ``prefix`` under this one (same credentials)."""
        sub = object.__new__(Storage)
        sub.scheme, sub.fs = self.scheme, self.fs
        sub.root = self._p(prefix).rstrip("/")
        sub.url = (f"file://{sub.root}" if self.scheme == "file" else f"s3://{sub.root}")
        return sub

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    # -- writes ----------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically."""
        if self.is_local:
            self._local_atomic(key, lambda fh: fh.write(data))
        else:
            self.fs.pipe_file(self._p(key), data)

    def put_json(self, key: str, obj: Any) -> None:
        self.put(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def put_file(self, key: str, local: str | Path) -> None:
        """Copy a local file to ``key`` atomically (streamed: never held in memory)."""
        if self.is_local:
            def copy(fh):
                with open(local, "rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 20)
            self._local_atomic(key, copy)
        else:
            self.fs.put_file(str(local), self._p(key))

    def _local_atomic(self, key: str, write) -> None:
        path = Path(self._p(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def append(self, key: str, text: str) -> None:
        """Append ``text`` to the log at ``key`` (created when missing)."""
        if self.is_local:
            path = Path(self._p(key))
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(text)
        else:
            try:
                old = self.fs.cat_file(self._p(key))
            except FileNotFoundError:
                old = b""
            self.fs.pipe_file(self._p(key), old + text.encode("utf-8"))

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is already gone)."""
        try:
            self.fs.rm_file(self._p(key))
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under ``prefix``."""
        try:
            self.fs.rm(self._p(prefix.rstrip("/")), recursive=True)
        except FileNotFoundError:
            pass

    # -- reads -----------------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        """The bytes at ``key``; FileNotFoundError when it does not exist."""
        if self.is_local:
            return self.fs.cat_file(self._p(key))
        # one GET: s3fs otherwise asks for the size first (a HEAD per read, to split large objects into
        # concurrent ranges), which doubles the round trips of the small keys read here (markers, statuses)
        return self.fs.cat_file(self._p(key), max_concurrency=1)

    def get_json(self, key: str) -> Any | None:
        try:
            return json.loads(self.get(key))
        except FileNotFoundError:
            return None

    def get_file(self, key: str, local: str | Path) -> Path:
        """Copy ``key`` to a local file the caller owns (for tools that need a path: docker build)."""
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self._p(key), str(local))
        return Path(local)

    def open(self, key: str, mode: str = "rb") -> IO:
        """Open ``key`` for reading (``rb`` or ``r``)."""
        if "w" in mode or "a" in mode:
            raise ValueError("Storage.open is for reading; write with put/put_file/append")
        return self.fs.open(self._p(key), mode)

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._p(key))

    def size(self, key: str) -> int:
        return int(self.fs.size(self._p(key)))

    def modified(self, key: str) -> float | None:
        """Last modification time (epoch seconds), or None when the key does not exist."""
        try:
            m = self.fs.modified(self._p(key))
        except FileNotFoundError:
            return None
        return m.timestamp()

    # -- listing ---------------------------------------------------------------------------------
    def list_after(self, prefix: str, start_after: str = "", limit: int | None = None) -> list[str]:
        """Keys under ``prefix`` (recursively), sorted, strictly after ``start_after`` (a full key)."""
        if self.is_local:   # names only: no stat() per file
            return [e.key for e in itertools.islice(self._local_entries(prefix, start_after, with_stat=False), limit)]
        return [e.key for e in self.entries_after(prefix, start_after, limit)]

    def iter_after(self, prefix: str, start_after: str = "") -> Iterator[str]:
        """``list_after`` lazily: on S3 the next page is asked for only when the caller reads on."""
        entries = (self._local_entries(prefix, start_after, with_stat=False) if self.is_local
                   else self._s3_entries(prefix, start_after))
        return (e.key for e in entries)

    def entries_after(self, prefix: str, start_after: str = "", limit: int | None = None) -> list[Entry]:
        out: list[Entry] = []
        for entry in (self._local_entries(prefix, start_after) if self.is_local
                      else self._s3_entries(prefix, start_after)):
            out.append(entry)
            if limit is not None and len(out) >= limit:
                break
        return out

    def _local_entries(self, prefix: str, start_after: str, with_stat: bool = True) -> Iterator[Entry]:
        base = Path(self._p(prefix))
        # prefix may end inside a name ("incoming/c/01J"): list its directory and filter by name
        if prefix and not prefix.endswith("/") and not base.is_dir():
            directory, stem = base.parent, base.name
            rel_dir = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        else:
            directory, stem = base, ""
            rel_dir = prefix if prefix.endswith("/") or not prefix else prefix + "/"
        yield from self._walk(directory, rel_dir, stem, start_after, with_stat)

    def _walk(self, directory: Path, rel: str, stem: str, start_after: str, with_stat: bool = True) -> Iterator[Entry]:
        try:
            with os.scandir(directory) as it:
                # names whose every key sorts at or before start_after are dropped before sorting (a
                # steady sensor tick keeps a few hundred of 20,000 names): a superset of what is yielded
                items = sorted((e for e in it if e.name.startswith(stem) and not e.name.startswith(".")
                                and (not start_after or rel + e.name + "/\U0010ffff" > start_after)),
                               key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for e in items:
            key = rel + e.name
            if e.is_dir(follow_symlinks=False):
                # skip a directory whose every key sorts at or before start_after
                if start_after and key + "/\U0010ffff" <= start_after:
                    continue
                yield from self._walk(Path(e.path), key + "/", "", start_after, with_stat)
            elif key > start_after:
                if not with_stat:
                    yield Entry(key, -1, "")
                    continue
                st = e.stat(follow_symlinks=False)
                yield Entry(key, st.st_size, f"{st.st_mtime_ns}:{st.st_size}")

    def _s3_entries(self, prefix: str, start_after: str) -> Iterator[Entry]:
        bucket, _, root = self.root.partition("/")
        root = root + "/" if root else ""
        token = None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": root + prefix}
            if token:
                kwargs["ContinuationToken"] = token
            elif start_after:
                kwargs["StartAfter"] = root + start_after
            page = self.fs.call_s3("list_objects_v2", **kwargs)
            for obj in page.get("Contents", []):
                yield Entry(obj["Key"][len(root):], int(obj["Size"]), obj.get("ETag", "").strip('"'))
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate children of ``prefix`` that hold keys (``a/`` -> ["x", "y"])."""
        prefix = prefix.rstrip("/") + "/"
        if self.is_local:
            try:
                return sorted(e.name for e in os.scandir(self._p(prefix)) if e.is_dir()
                              and not e.name.startswith("."))
            except FileNotFoundError:
                return []
        bucket, _, root = self.root.partition("/")
        root = root + "/" if root else ""
        names, token = [], None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": root + prefix, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.fs.call_s3("list_objects_v2", **kwargs)
            names += [p["Prefix"][len(root + prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return sorted(names)
            token = page["NextContinuationToken"]


def unique_suffix() -> str:
    return uuid.uuid4().hex[:12]


def as_storage(where: "Storage | str | Path") -> Storage:
    return where if isinstance(where, Storage) else Storage(where)
