"""Streaming the entries: every local header checked against the central directory, every entry
inflated with a running counter that stops at the uncompressed cap, in small fixed-size buffers.
Only the root text files we must parse (each at most `TEXT_FILE_CAP`) are kept.
"""
from __future__ import annotations

import bz2
import struct
import zlib
from typing import BinaryIO, Iterator

from intake.validation.archive import _BZIP2, _STORED, _Entry
from intake.validation.rules import RATIO_FLOOR_BYTES, TEXT_FILE_CAP, _TEXT_FILES, _Findings, _mib

_READ_CHUNK = 64 * 2**10  # compressed bytes fed to the decompressor at a time
_OUT_CHUNK = 2**20  # most bytes the decompressor may hand back at a time
_LOCAL = struct.Struct("<4sHHHHHIIIHH")


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
