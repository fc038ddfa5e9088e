"""Where the platform keeps its files: ARENA_HOME, the intake bucket and the lake (DESIGN.md)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


def arena_home() -> Path:
    return Path(os.environ.get("ARENA_HOME", "./.arena")).resolve()


def local_path(url: str) -> Path:
    """The directory behind a file:// URL (the only scheme the embedded defaults use)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"storage URL {url!r}: only file:// is supported on one machine; "
                         "object stores need the s3 settings of the production setup")
    return Path(parsed.netloc + parsed.path if parsed.scheme else url).resolve()


@dataclass(frozen=True)
class StorageSettings:
    home: Path
    bucket: Path
    lake: Path

    @classmethod
    def from_env(cls) -> "StorageSettings":
        home = arena_home()
        bucket = local_path(os.environ.get("ARENA_BUCKET_URL", f"file://{home}/bucket"))
        lake = local_path(os.environ.get("ARENA_LAKE_URL", f"file://{home}/lake"))
        return cls(home=home, bucket=bucket, lake=lake)
