"""Deterministic zipping of a submission directory: identical trees give identical bytes (sha256).

Entries are sorted, timestamps fixed at 1980-01-01, permissions normalised to 0644 (0755 where the
owner could execute the file, so entry-point scripts keep working), compression fixed at deflate
level 6. Build clutter (`__pycache__`, `.git`, `*.pyc`) is left out; directories are implied by the
files in them, so empty directories are not kept. Symbolic links and special files are refused, as
the validator would refuse them.
"""
from __future__ import annotations

import os
import stat
import tempfile
import zipfile
from pathlib import Path

SKIPPED_DIRS = frozenset({"__pycache__", ".git"})
SKIPPED_SUFFIXES = (".pyc",)
_EPOCH = (1980, 1, 1, 0, 0, 0)


class PackagingError(ValueError):
    """The directory cannot become a submission zip; the message names the path and why."""


def zip_directory(src: Path, dest: Path) -> Path:
    """Zip the files under `src` into `dest` (written atomically) and return `dest`."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise PackagingError(f"{src} is not a directory")
    files = _files(src, exclude=dest.resolve())
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(out, "w") as zf:
            for rel, path in files:
                _add(zf, rel, path)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _files(src: Path, exclude: Path) -> list[tuple[str, Path]]:
    """(archive name, path) for every file to pack, sorted by archive name."""
    found = []
    for root, dirs, names in os.walk(src, followlinks=False):
        base = Path(root)
        for d in list(dirs):
            if (base / d).is_symlink():
                raise PackagingError(f"{base / d} is a symbolic link; submissions may not contain links")
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in names:
            path = base / name
            if name.endswith(SKIPPED_SUFFIXES) or path.resolve() == exclude:
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise PackagingError(f"{path} is a symbolic link; submissions may not contain links")
            if not stat.S_ISREG(mode):
                raise PackagingError(f"{path} is not a regular file (device, fifo or socket)")
            rel = path.relative_to(src).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise PackagingError(f"{path!s} has a name that is not UTF-8") from None
            found.append((rel, path))
    return sorted(found)


def _add(zf: zipfile.ZipFile, rel: str, path: Path) -> None:
    info = zipfile.ZipInfo(rel, date_time=_EPOCH)
    info.create_system = 3  # unix, so the permission bits below are honoured on extraction
    executable = path.stat().st_mode & stat.S_IXUSR
    info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = path.stat().st_size  # lets zipfile choose zip64 up front for huge files
    with open(path, "rb") as f, zf.open(info, "w") as entry:
        while chunk := f.read(2**20):
            entry.write(chunk)
