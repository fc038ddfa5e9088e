"""Where the platform keeps its files: ARENA_HOME, the intake bucket and the lake (DESIGN.md).

``ARENA_BUCKET_URL`` and ``ARENA_LAKE_URL`` are storage URLs (lake/storage.py): ``file://…`` on one
machine (the default, under ARENA_HOME), ``s3://bucket/prefix`` on a fleet (``ARENA_S3_ENDPOINT_URL``
for a non-AWS S3 server, credentials from the usual ``AWS_*`` variables).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


def arena_home() -> Path:
    return Path(os.environ.get("ARENA_HOME", "./.arena")).resolve()


def storage_url(url: str) -> str:
    """A storage URL with a relative file path made absolute; other schemes unchanged."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return f"file://{Path(parsed.netloc + parsed.path if parsed.scheme else url).resolve()}"
    return url.rstrip("/")


@dataclass(frozen=True)
class StorageSettings:
    home: Path
    bucket: str     # storage URL of the intake bucket
    lake: str       # storage URL of the lake

    @classmethod
    def from_env(cls) -> "StorageSettings":
        home = arena_home()
        return cls(home=home, bucket=storage_url(os.environ.get("ARENA_BUCKET_URL", f"file://{home}/bucket")),
                   lake=storage_url(os.environ.get("ARENA_LAKE_URL", f"file://{home}/lake")))
