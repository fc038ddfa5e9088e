"""Validation of an uploaded submission zip, before anything is queued.

The archive is read here rather than through `zipfile`: the end record, the central directory and
every local header are parsed by hand, and every entry is inflated with a running counter that stops
at the cap. Sizes written in the headers are never trusted (a zip bomb lies about them), and memory
stays bounded whatever the archive holds: one entry's metadata at a time, small fixed-size buffers
while inflating, and only the three small text files we must parse (each at most 1 MiB) are kept.

Every refusal is a `Problem` with a stable rule code, the offending value and a sentence naming
both; all problems are collected, then `SubmissionRejected` is raised once.
"""
from __future__ import annotations

import bz2
import hashlib
import json
import re
import stat
import struct
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

# What each rule code means, in the words used at the end of every message.
RULES: dict[str, str] = {
    "zip.not_a_zip": "the upload must be a zip archive",
    "zip.truncated": "the archive must be complete",
    "zip.corrupt": "the archive's structure must be consistent",
    "zip.unsupported": "single-disk zip archives only",
    "zip.encrypted": "encrypted entries are not allowed",
    "zip.unsupported_compression": "entries must be stored, deflated or bzip2-compressed",
    "zip.bad_filename": "entry names must be UTF-8 without control characters, at most 1024 bytes",
    "zip.absolute_path": "no absolute paths or '..'",
    "zip.path_traversal": "no absolute paths or '..'",
    "zip.backslash_path": "entry names use '/' as separator, never '\\'",
    "zip.duplicate_name": "each path may appear once",
    "zip.symlink": "symbolic links are not allowed",
    "zip.special_file": "device, fifo and socket entries are not allowed",
    "zip.header_mismatch": "local and central headers must agree",
    "zip.overlapping_entries": "entries may not share or overlap their data",
    "zip.too_many_entries": "at most {max_entries} entries",
    "zip.too_large_compressed": "at most {max_compressed} compressed",
    "zip.too_large_uncompressed": "at most {max_uncompressed} uncompressed",
    "zip.compression_ratio": "compression ratio at most {max_ratio:g}:1",
    "zip.size_mismatch": "an entry must inflate to the size its header states",
    "zip.crc_mismatch": "an entry's data must match its CRC-32",
    "zip.corrupt_entry": "an entry's compressed data must be valid",
    "files.missing": "the archive root must hold {required}",
    "files.too_large": "Dockerfile, requirements.txt and arena.toml are at most 1 MiB each",
    "files.not_utf8": "Dockerfile, requirements.txt and arena.toml must be UTF-8 text",
    "dockerfile.no_from": "a Dockerfile needs a FROM",
    "dockerfile.invalid": "the Dockerfile must parse",
    "dockerfile.from_not_allowed": "FROM must name an official base image ({allowed}) or an earlier stage",
    "dockerfile.add_url": "ADD may not fetch URLs; download in RUN with pip or COPY the file",
    "arena_toml.invalid": "arena.toml must be valid TOML with string keys challenge, display_name, notes",
}

TEXT_FILE_CAP = 2**20
MAX_NAME_BYTES = 1024
# The compression-ratio rule ignores entries (and archives) that inflate to less than this: a few
# kilobytes of blank lines legitimately compress 200:1, and cannot hurt anyone.
RATIO_FLOOR_BYTES = 2**20
_TEXT_FILES = ("Dockerfile", "requirements.txt", "arena.toml")
_ARENA_TOML_KEYS = ("challenge", "display_name", "notes")
_CHALLENGE_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

_READ_CHUNK = 64 * 2**10  # compressed bytes fed to the decompressor at a time
_OUT_CHUNK = 2**20  # most bytes the decompressor may hand back at a time

_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_STORED, _DEFLATED, _BZIP2, _AES = 0, 8, 12, 99
_METHOD_NAMES = {1: "shrink", 6: "implode", 9: "deflate64", 14: "lzma", 93: "zstandard", 95: "xz", 98: "ppmd"}


@dataclass(frozen=True)
class Problem:
    rule: str
    value: str
    message: str


class SubmissionRejected(Exception):
    """Every problem found in one upload; `str()` lists them one per line."""

    def __init__(self, problems: list[Problem]):
        super().__init__(list(problems))
        self.problems: list[Problem] = list(problems)

    def __str__(self) -> str:
        return "submission rejected:\n" + "\n".join(f"- {p.message}" for p in self.problems)


@dataclass(frozen=True)
class ValidationRules:
    max_entries: int = 2000
    max_compressed_bytes: int = 50 * 2**20
    max_uncompressed_bytes: int = 200 * 2**20
    max_compression_ratio: float = 100.0
    allowed_base_images: tuple[str, ...] = ("arena/python-cpu:1", "arena/torch-cuda:1")
    required_files: tuple[str, ...] = ("Dockerfile", "requirements.txt")


@dataclass(frozen=True)
class ValidatedSubmission:
    sha256: str
    compressed_bytes: int
    uncompressed_bytes: int  # measured by inflating, not read from the headers
    entries: int
    base_images: tuple[str, ...]  # the base image behind every FROM, in order, stage references resolved
    challenge: str | None
    display_name: str | None
    notes: str | None


def validate_zip(path: Path, rules: ValidationRules = ValidationRules()) -> ValidatedSubmission:
    """Check an uploaded zip against every rule; raise `SubmissionRejected` listing all problems."""
    found = _Findings(rules)
    path = Path(path)
    size = path.stat().st_size
    too_large = size > rules.max_compressed_bytes
    if too_large:
        found.add("zip.too_large_compressed", f"{size} bytes",
                  f"the upload is {_mib(size)} ({size} bytes), over the limit")
    with open(path, "rb") as f:
        # Past the cap we only look at the metadata: hashing and inflating a huge upload is wasted work.
        digest = "" if too_large else _sha256(f)
        directory = _read_directory(f, size, rules, found)
        if directory is None:
            raise SubmissionRejected(found.problems)
        entries, cd_offset = directory
        layout = _Layout(entries, found)
        texts, measured = _stream_entries(f, entries, cd_offset, found, skip_data=too_large)
    if measured is not None and not found.has("zip.compression_ratio"):
        _check_ratio(measured, size, "the whole archive", found)
    for name in rules.required_files:
        if name not in layout.root_files:
            found.add("files.missing", name, f"'{name}' is missing from the root of the archive")
    base_images = _check_dockerfile(texts.get("Dockerfile"), rules, found)
    if (req := texts.get("requirements.txt")) is not None:
        _decode_text("requirements.txt", req, found)
    meta = _check_arena_toml(texts.get("arena.toml"), found)
    if found.problems:
        raise SubmissionRejected(found.problems)
    return ValidatedSubmission(
        sha256=digest, compressed_bytes=size, uncompressed_bytes=measured or 0, entries=len(entries),
        base_images=base_images, challenge=meta.get("challenge"),
        display_name=meta.get("display_name"), notes=meta.get("notes"))


# -- collecting problems ---------------------------------------------------------------------------

class _Findings:
    def __init__(self, rules: ValidationRules):
        self.rules = rules
        self.problems: list[Problem] = []

    def add(self, rule: str, value: str, what: str) -> None:
        r = self.rules
        why = RULES[rule].format(
            max_entries=r.max_entries, max_compressed=_mib(r.max_compressed_bytes),
            max_uncompressed=_mib(r.max_uncompressed_bytes), max_ratio=r.max_compression_ratio,
            required=", ".join(r.required_files), allowed=", ".join(r.allowed_base_images))
        self.problems.append(Problem(rule, value, f"{what} (rule {rule}: {why})"))

    def has(self, rule: str) -> bool:
        return any(p.rule == rule for p in self.problems)


def _mib(n: int | float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def _sha256(f: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := f.read(2**20):
        h.update(chunk)
    return h.hexdigest()


# -- the archive's structure -----------------------------------------------------------------------

@dataclass
class _Entry:
    raw_name: bytes
    name: str  # for messages: decoded, undecodable bytes shown as \x.. escapes
    path: str | None  # normalised relative path; None when the name itself is refused
    is_dir: bool
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    offset: int
    readable: bool  # not encrypted, a compression method we can inflate


class _Unreadable(Exception):
    def __init__(self, rule: str, value: str, what: str):
        self.rule, self.value, self.what = rule, value, what


def _read_directory(f: BinaryIO, size: int, rules: ValidationRules,
                    found: _Findings) -> tuple[list[_Entry], int] | None:
    """The entries in data order and where the central directory starts; None if unreadable."""
    try:
        cd_offset, cd_size, count = _end_record(f, size)
        if count > rules.max_entries:
            found.add("zip.too_many_entries", str(count),
                      f"the archive holds {count} entries, over the limit")
            return None
        entries = [_central_entry(f, cd_offset + cd_size, found) for _ in range(count)]
        if f.tell() != cd_offset + cd_size:
            raise _Unreadable("zip.corrupt", f"{count} entries",
                              f"the central directory does not hold the {count} entries its end record states")
    except _Unreadable as e:
        found.add(e.rule, e.value, e.what)
        return None
    return sorted(entries, key=lambda e: e.offset), cd_offset


def _not_a_zip(f: BinaryIO, size: int) -> _Unreadable:
    f.seek(0)
    if f.read(4) == b"PK\x03\x04":
        return _Unreadable("zip.truncated", f"{size} bytes",
                           f"the upload starts like a zip but has no end record after {size} bytes: it is cut short")
    return _Unreadable("zip.not_a_zip", f"{size} bytes",
                       "the upload is empty (0 bytes)" if size == 0
                       else f"the upload ({size} bytes) is not a zip archive")


def _end_record(f: BinaryIO, size: int) -> tuple[int, int, int]:
    tail_len = min(size, _EOCD.size + 0xFFFF)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    pos = len(tail)
    while True:  # the last signature whose comment length reaches exactly the end of the file
        pos = tail.rfind(b"PK\x05\x06", 0, pos)
        if pos < 0:
            raise _not_a_zip(f, size)
        if pos + _EOCD.size <= len(tail):
            rec = _EOCD.unpack_from(tail, pos)
            if pos + _EOCD.size + rec[7] == len(tail):
                break
    eocd_at = size - tail_len + pos
    _, disk, cd_disk, n_disk, count, cd_size, cd_offset, _ = rec
    cd_end = eocd_at
    locator_at = eocd_at - _ZIP64_LOCATOR.size
    if locator_at >= 0:
        f.seek(locator_at)
        sig, _, z64_at, _ = _ZIP64_LOCATOR.unpack(f.read(_ZIP64_LOCATOR.size))
        if sig == b"PK\x06\x07":
            if z64_at + _ZIP64_EOCD.size > locator_at:
                raise _Unreadable("zip.corrupt", str(z64_at), f"the zip64 end record offset {z64_at} is impossible")
            f.seek(z64_at)
            sig, _, _, _, disk, cd_disk, n_disk, count, cd_size, cd_offset = _ZIP64_EOCD.unpack(
                f.read(_ZIP64_EOCD.size))
            if sig != b"PK\x06\x06":
                raise _Unreadable("zip.corrupt", str(z64_at), f"no zip64 end record at offset {z64_at}")
            cd_end = z64_at
    if disk or cd_disk:
        raise _Unreadable("zip.unsupported", f"disk {disk}", "the archive is split over several disks")
    if cd_offset + cd_size != cd_end:
        raise _Unreadable("zip.corrupt", f"offset {cd_offset}",
                          f"the central directory (offset {cd_offset}, {cd_size} bytes) does not end where "
                          f"the end record sits (offset {cd_end}): the archive is damaged or has data prepended")
    f.seek(cd_offset)
    return cd_offset, cd_size, count


def _central_entry(f: BinaryIO, cd_end: int, found: _Findings) -> _Entry:
    at = f.tell()
    head = f.read(_CENTRAL.size)
    if len(head) < _CENTRAL.size or head[:4] != b"PK\x01\x02" or at + _CENTRAL.size > cd_end:
        raise _Unreadable("zip.corrupt", f"offset {at}", f"no central directory entry at offset {at}")
    (_, made_by, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len,
     disk, _, attr, offset) = _CENTRAL.unpack(head)
    raw_name = f.read(name_len)
    extra = f.read(extra_len)
    f.seek(comment_len, 1)
    if f.tell() > cd_end or len(raw_name) != name_len or len(extra) != extra_len:
        raise _Unreadable("zip.corrupt", f"offset {at}", f"the central directory entry at offset {at} is cut short")
    name, path = _check_name(raw_name, found)
    usize, csize, offset = _zip64_fields(extra, usize, csize, offset, name)
    mode = attr >> 16
    kind = stat.S_IFMT(mode)
    is_dir = raw_name.endswith(b"/") or kind == stat.S_IFDIR
    if kind == stat.S_IFLNK:
        found.add("zip.symlink", name, f"entry '{name}' is a symbolic link")
    elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        what = {stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
                stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}[kind]
        found.add("zip.special_file", name, f"entry '{name}' is a {what}")
    encrypted = bool(flags & 0x41) or method == _AES
    if encrypted:
        found.add("zip.encrypted", name, f"entry '{name}' is encrypted")
    elif method not in (_STORED, _DEFLATED, _BZIP2):
        label = _METHOD_NAMES.get(method, "unknown")
        found.add("zip.unsupported_compression", f"{name}: method {method}",
                  f"entry '{name}' uses compression method {method} ({label})")
    if disk:
        raise _Unreadable("zip.unsupported", f"disk {disk}", f"entry '{name}' lives on another disk ({disk})")
    return _Entry(raw_name, name, path, is_dir, flags, method, crc, csize, usize, offset,
                  readable=not encrypted and method in (_STORED, _DEFLATED, _BZIP2))


def _zip64_fields(extra: bytes, usize: int, csize: int, offset: int, name: str) -> tuple[int, int, int]:
    if 0xFFFFFFFF not in (usize, csize, offset):
        return usize, csize, offset
    i = 0
    while i + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, i)
        if tag == 1:
            values = iter(struct.unpack_from(f"<{min(length, len(extra) - i - 4) // 8}Q", extra, i + 4))
            try:
                usize = next(values) if usize == 0xFFFFFFFF else usize
                csize = next(values) if csize == 0xFFFFFFFF else csize
                offset = next(values) if offset == 0xFFFFFFFF else offset
            except StopIteration:
                break
            return usize, csize, offset
        i += 4 + length
    raise _Unreadable("zip.corrupt", name, f"entry '{name}' needs zip64 sizes but has no valid zip64 field")


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


# -- streaming the entries -------------------------------------------------------------------------

class _CorruptEntry(Exception):
    pass


def _stream_entries(f: BinaryIO, entries: list[_Entry], cd_offset: int, found: _Findings,
                    skip_data: bool) -> tuple[dict[str, bytes], int | None]:
    """Check every local header; inflate every entry, counting, until the uncompressed cap.

    Returns the root text files we must parse and the measured uncompressed total (None when the
    data was not read at all).
    """
    cap = found.rules.max_uncompressed_bytes
    texts: dict[str, bytes] = {}
    total, capped, data_end = 0, skip_data, 0
    for e in entries:
        if e.offset < data_end:
            found.add("zip.overlapping_entries", e.name,
                      f"entry '{e.name}' (offset {e.offset}) overlaps the data of the entry before it")
            continue
        start = _local_header(f, e, found)
        if start is None:
            continue
        data_end = start + e.csize
        if data_end > cd_offset:
            found.add("zip.truncated", e.name, f"entry '{e.name}' claims {e.csize} bytes of data that "
                      "run into the central directory or past the end of the file")
            continue
        if capped or not e.readable:
            continue
        keep = e.path in _TEXT_FILES and not e.is_dir
        text: bytearray | None = bytearray() if keep else None
        measured, crc = 0, 0
        try:
            for chunk in _entry_data(f, e, start):
                measured += len(chunk)
                total += len(chunk)
                crc = zlib.crc32(chunk, crc)
                if text is not None:
                    if len(text) + len(chunk) > TEXT_FILE_CAP:
                        found.add("files.too_large", e.name, f"'{e.name}' is over {_mib(TEXT_FILE_CAP)}")
                        text = None
                    else:
                        text += chunk
                if total > cap:
                    capped = True
                    found.add("zip.too_large_uncompressed", f"more than {cap} bytes",
                              f"the archive inflates to more than {cap} bytes ({_mib(cap)}); "
                              f"measuring stopped inside entry '{e.name}'")
                    break
        except _CorruptEntry as err:
            found.add("zip.corrupt_entry", e.name, f"entry '{e.name}' has damaged data: {err}")
            continue
        if measured != e.usize and (not capped or measured > e.usize):
            found.add("zip.size_mismatch", e.name, f"entry '{e.name}' states {e.usize} bytes but inflates to "
                      f"{'more than ' if capped else ''}{measured}")
        elif not capped and crc != e.crc:
            found.add("zip.crc_mismatch", e.name, f"entry '{e.name}' fails its CRC-32 check")
        _check_ratio(measured, e.csize, f"entry '{e.name}'", found, value=e.name)
        if text is not None and not capped:
            texts[e.path] = bytes(text)
    return texts, None if skip_data else total


def _local_header(f: BinaryIO, e: _Entry, found: _Findings) -> int | None:
    """Where the entry's data starts, after checking its local header agrees with the central one."""
    f.seek(e.offset)
    head = f.read(_LOCAL.size)
    if len(head) < _LOCAL.size or head[:4] != b"PK\x03\x04":
        found.add("zip.corrupt", e.name, f"entry '{e.name}' has no local header at offset {e.offset}")
        return None
    _, _, flags, method, _, _, _, _, _, name_len, extra_len = _LOCAL.unpack(head)
    if f.read(name_len) != e.raw_name or (flags & 1) != (e.flags & 1) or method != e.method:
        found.add("zip.header_mismatch", e.name, f"entry '{e.name}' has a local header that disagrees with "
                  "the central directory (name, encryption or compression method)")
        return None
    return e.offset + _LOCAL.size + name_len + extra_len


def _entry_data(f: BinaryIO, e: _Entry, start: int) -> Iterator[bytes]:
    """The entry's uncompressed bytes, in pieces of at most 1 MiB, read from its compressed size."""
    f.seek(start)
    left = e.csize

    def read() -> bytes:
        nonlocal left
        data = f.read(min(_READ_CHUNK, left))
        left -= len(data)
        return data

    if e.csize == 0:  # directories, empty files: nothing to inflate, whatever the method says
        return
    if e.method == _STORED:
        while left and (data := read()):
            yield data
        return
    if e.method == _BZIP2:
        b = bz2.BZ2Decompressor()
        while not b.eof:
            data = read() if b.needs_input else b""
            if b.needs_input and not data:
                raise _CorruptEntry("the bzip2 stream ends early")
            try:
                yield b.decompress(data, _OUT_CHUNK)
            except (OSError, ValueError) as err:
                raise _CorruptEntry(str(err)) from None
        return
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        while not d.eof:
            data = d.unconsumed_tail or read()
            # max_length bounds each piece; input goes in 64 KiB at a time so the tail zlib keeps
            # (and Python copies on every call) stays small even at ratio 1000:1.
            yield d.decompress(data, _OUT_CHUNK) if data else d.flush()
            if not data and not d.eof:
                raise _CorruptEntry("the deflate stream ends early")
    except zlib.error as err:
        raise _CorruptEntry(str(err)) from None


def _check_ratio(uncompressed: int, compressed: int, what: str, found: _Findings, value: str | None = None) -> None:
    ratio = uncompressed / max(compressed, 1)
    if uncompressed >= RATIO_FLOOR_BYTES and ratio > found.rules.max_compression_ratio:
        found.add("zip.compression_ratio", f"{value or 'archive'}: {ratio:.0f}:1",
                  f"{what} inflates {compressed} bytes into {uncompressed} (ratio {ratio:.0f}:1)")


# -- the small files we parse ----------------------------------------------------------------------

def _decode_text(name: str, data: bytes, found: _Findings) -> str | None:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        found.add("files.not_utf8", name, f"'{name}' is not UTF-8 text (byte {err.start})")
        return None


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|git@)")
_HEREDOC = re.compile(r"<<(-?)[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?")


def _expand(text: str, env: dict[str, str | None], strict: bool = False) -> str | None:
    """Docker's $VAR, ${VAR}, ${VAR:-word}, ${VAR:+word} (and without ':').

    None when syntax we do not know is left over, or (strict) when a variable has no value.
    """
    unset = False

    def sub(m: re.Match) -> str:
        nonlocal unset
        name = m.group(1) or m.group(4)
        value, op, word = env.get(name), m.group(2), m.group(3) or ""
        if op in (":-", "-"):
            return word if (value is None or (op == ":-" and value == "")) else value
        if op in (":+", "+"):
            return word if (value is not None and (op == "+" or value != "")) else ""
        unset = unset or value is None
        return value or ""
    out = _VAR.sub(sub, text)
    return None if "$" in out or (strict and unset) else out


def _instructions(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, KEYWORD, arguments) for each logical Dockerfile line; heredoc bodies skipped."""
    lines = text.splitlines()
    escape = "\\"
    for line in lines:  # parser directives come first, before any comment or instruction
        m = re.fullmatch(r"\s*#\s*([A-Za-z]+)\s*=\s*(\S+)\s*", line)
        if not m:
            break
        if m.group(1).lower() == "escape" and m.group(2) in ("`", "\\"):
            escape = m.group(2)
    i = 0
    while i < len(lines):
        start, parts = i + 1, []
        while i < len(lines):
            line = lines[i]
            i += 1
            if line.lstrip().startswith("#") or (parts and not line.strip()):
                continue
            stripped = line.rstrip()
            if stripped.endswith(escape):
                parts.append(stripped[:-1])
                continue
            parts.append(line)
            break
        logical = " ".join(parts).strip()
        if not logical:
            continue
        keyword, _, rest = logical.partition(" ")
        for dash, marker in _HEREDOC.findall(rest) if keyword.upper() in ("RUN", "COPY", "ADD") else ():
            while i < len(lines) and (lines[i].strip() if dash else lines[i]) != marker:
                i += 1
            i += 1
        yield start, keyword.upper(), rest.strip()


def _check_dockerfile(data: bytes | None, rules: ValidationRules, found: _Findings) -> tuple[str, ...]:
    """Every FROM (and COPY --from / RUN --mount from=) must be an allowed image or an earlier stage."""
    if data is None:
        return ()
    text = _decode_text("Dockerfile", data, found)
    if text is None:
        return ()
    global_args: dict[str, str | None] = {}
    env: dict[str, str | None] = {}
    stages: dict[str, str | None] = {}  # stage name -> its base image (None if refused)
    bases: list[str | None] = []

    def source_allowed(line: int, keyword: str, ref: str) -> str | None:
        resolved = _expand(ref, global_args if keyword == "FROM" else env, strict=True)
        if resolved is not None and resolved.lower() in stages:
            return stages[resolved.lower()]
        if resolved is not None and keyword != "FROM" and resolved.isdigit() and int(resolved) < len(bases):
            return bases[int(resolved)]
        if resolved is not None and resolved in rules.allowed_base_images:
            return resolved
        if resolved is None:
            detail = "uses a build argument without a default (or syntax we cannot resolve)"
        elif resolved != ref:
            detail = f"resolves to '{resolved}' with its ARG defaults, which is not an official base image"
        else:
            detail = "is not an official base image"
        found.add("dockerfile.from_not_allowed", resolved or ref,
                  f"Dockerfile line {line}: {keyword} '{ref}' {detail}")
        return None

    for line, keyword, rest in _instructions(text):
        if keyword == "ARG":
            for name, default in _assignments(rest):
                # Inside a stage, a bare `ARG NAME` brings in the global default, if any.
                value = _expand(default, env) if default is not None else global_args.get(name)
                if not bases:
                    global_args[name] = value
                env[name] = value
        elif keyword == "ENV":
            for name, value in _assignments(rest, env_style=True):
                env[name] = _expand(value or "", env)
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words or (len(words) > 1 and (len(words) != 3 or words[1].lower() != "as")):
                found.add("dockerfile.invalid", f"FROM {rest}", f"Dockerfile line {line}: cannot read 'FROM {rest}'")
                bases.append(None)
                continue
            base = source_allowed(line, "FROM", words[0])
            bases.append(base)
            if len(words) == 3:
                stages[words[2].lower()] = base
        elif keyword in ("COPY", "ADD", "RUN"):
            _check_sources(line, keyword, rest, env, found, source_allowed)
    if not bases:
        found.add("dockerfile.no_from", "Dockerfile", "the Dockerfile has no FROM instruction")
    return tuple(b for b in bases if b is not None)


def _check_sources(line: int, keyword: str, rest: str, env: dict[str, str | None], found: _Findings,
                   source_allowed: Callable[[int, str, str], str | None]) -> None:
    """COPY --from and RUN --mount from= name stages or allowed images; ADD sources are not URLs."""
    words = rest.split()
    flags = []
    while words and words[0].startswith("--"):
        flags.append(words.pop(0))
    for flag in flags:
        if keyword == "COPY" and flag.startswith("--from="):
            source_allowed(line, "COPY --from", flag.removeprefix("--from="))
        if keyword == "RUN" and flag.startswith("--mount="):
            for option in flag.removeprefix("--mount=").split(","):
                key, _, value = option.partition("=")
                if key == "from" and value:
                    source_allowed(line, "RUN --mount from", value)
    if keyword != "ADD":
        return
    body = " ".join(words)
    try:
        args = json.loads(body) if body.startswith("[") else words
    except json.JSONDecodeError:
        args = words
    for src in args[:-1]:
        if not isinstance(src, str) or src.startswith("<<"):
            continue
        resolved = _expand(src, env)
        if resolved is None or _URL.match(src) or _URL.match(resolved):
            found.add("dockerfile.add_url", src, f"Dockerfile line {line}: ADD '{src}' "
                      + ("uses a variable that cannot be resolved, so it may be a URL"
                         if resolved is None else "fetches a URL"))


def _assignments(rest: str, env_style: bool = False) -> Iterator[tuple[str, str | None]]:
    """ARG NAME[=default] ...; ENV NAME=value ... or the legacy ENV NAME value."""
    words = rest.split()
    if env_style and words and "=" not in words[0]:
        yield words[0], rest[len(words[0]):].strip()
        return
    for word in words:
        name, eq, value = word.partition("=")
        yield name, (value.strip("\"'") if eq else None)


def _check_arena_toml(data: bytes | None, found: _Findings) -> dict[str, str]:
    if data is None:
        return {}
    text = _decode_text("arena.toml", data, found)
    if text is None:
        return {}
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        found.add("arena_toml.invalid", str(err), f"arena.toml does not parse: {err}")
        return {}
    meta: dict[str, str] = {}
    for key, value in doc.items():
        if key not in _ARENA_TOML_KEYS:
            found.add("arena_toml.invalid", key, f"arena.toml has an unknown key '{key}'")
        elif not isinstance(value, str):
            shown = f"{key} = {value!r}"
            found.add("arena_toml.invalid", shown,
                      f"arena.toml sets '{shown}', but {key} must be a string, not {type(value).__name__}")
        elif key == "challenge" and not _CHALLENGE_SLUG.fullmatch(value):
            shown = f"{key} = {value!r}"
            found.add("arena_toml.invalid", shown, f"arena.toml sets '{shown}', which is not a challenge name "
                      "(lowercase letters, digits, '.', '_', '-')")
        else:
            meta[key] = value
    return meta
