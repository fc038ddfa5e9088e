"""The archive's structure, parsed by hand rather than through `zipfile`: the end record (zip64
included) and the central directory, one entry's metadata at a time. Sizes written in the headers
are recorded, never trusted; `inflate` measures them.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import BinaryIO

from intake.validation.names import _check_name, _check_type
from intake.validation.rules import ValidationRules, _Findings

_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_STORED, _DEFLATED, _BZIP2, _AES = 0, 8, 12, 99
_METHOD_NAMES = {1: "shrink", 6: "implode", 9: "deflate64", 14: "lzma", 93: "zstandard", 95: "xz", 98: "ppmd"}


def _sha256(f: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := f.read(2**20):
        h.update(chunk)
    return h.hexdigest()


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
    is_dir = _check_type(raw_name, name, attr, found)
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
