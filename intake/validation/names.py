"""Rules on each entry's name and type, and on what the entries add up to (duplicate paths, the
files at the root of the archive)."""
from __future__ import annotations

import re
import stat
from typing import TYPE_CHECKING

from intake.validation.rules import MAX_NAME_BYTES, _Findings

if TYPE_CHECKING:
    from intake.validation.archive import _Entry


def _check_name(raw: bytes, found: _Findings) -> tuple[str, str | None]:
    """The display name, and the normalised path ('a/./b' -> 'a/b') when the name is acceptable."""
    try:
        full = raw.decode("utf-8")
    except UnicodeDecodeError:
        full = None
    name = _printable(full if full is not None else raw.decode("utf-8", "backslashreplace"))
    if full is None:
        # Without the UTF-8 flag the spec says cp437, but no tool today writes that on purpose, and
        # one name must mean one path for the build: names must be UTF-8 either way.
        found.add("zip.bad_filename", name, f"entry name '{name}' is not valid UTF-8")
        return name, None
    if not raw or len(raw) > MAX_NAME_BYTES or any(ord(c) < 0x20 or ord(c) == 0x7F for c in full):
        reason = ("is empty" if not raw else f"is {len(raw)} bytes long" if len(raw) > MAX_NAME_BYTES
                  else "contains control characters")
        found.add("zip.bad_filename", name, f"entry name '{name}' {reason}")
        return name, None
    if "\\" in full:
        found.add("zip.backslash_path", name, f"entry '{name}' contains a backslash")
        return name, None
    if full.startswith("/") or re.match(r"[A-Za-z]:", full):
        found.add("zip.absolute_path", name, f"entry '{name}' is an absolute path")
        return name, None
    if ".." in full.split("/"):
        found.add("zip.path_traversal", name, f"entry '{name}' escapes the submission root")
        return name, None
    return name, "/".join(p for p in full.split("/") if p not in ("", "."))


def _printable(name: str) -> str:
    """An entry name fit for a message: control characters escaped, at most 200 characters."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)
    return shown if len(shown) <= 200 else shown[:200] + "…"


def _check_type(raw_name: bytes, name: str, attr: int, found: _Findings) -> bool:
    """Whether the entry is a directory; symbolic links and special files are refused."""
    mode = attr >> 16
    kind = stat.S_IFMT(mode)
    is_dir = raw_name.endswith(b"/") or kind == stat.S_IFDIR
    if kind == stat.S_IFLNK:
        found.add("zip.symlink", name, f"entry '{name}' is a symbolic link")
    elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        what = {stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
                stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}[kind]
        found.add("zip.special_file", name, f"entry '{name}' is a {what}")
    return is_dir


class _Layout:
    """What the entries add up to: duplicate paths, and the files at the root."""

    def __init__(self, entries: list[_Entry], found: _Findings):
        self.root_files: set[str] = set()
        seen: dict[str, _Entry] = {}
        for e in sorted(entries, key=lambda e: e.name):
            if e.path is None or e.path == "":
                continue
            first = seen.get(e.path)
            if first is not None and not (first.is_dir and e.is_dir):
                found.add("zip.duplicate_name", e.path, f"path '{e.path}' appears more than once "
                          f"(entries '{first.name}' and '{e.name}')")
            seen.setdefault(e.path, e)
            if not e.is_dir and "/" not in e.path:
                self.root_files.add(e.path)
