"""Validation of an uploaded submission zip, before anything is queued.

The archive is read here rather than through `zipfile`: the end record, the central directory and
every local header are parsed by hand, and every entry is inflated with a running counter that stops
at the cap. Sizes written in the headers are never trusted (a zip bomb lies about them), and memory
stays bounded whatever the archive holds: one entry's metadata at a time, small fixed-size buffers
while inflating, and only the three small text files we must parse (each at most 1 MiB) are kept.

Every refusal is a `Problem` with a stable rule code, the offending value and a sentence naming
both; all problems are collected, then `SubmissionRejected` is raised once.

The package, one concern a module (imports run one way, everything leans on `rules`):
`rules` (rule codes, limits, `Problem`, `SubmissionRejected`, the problem collector), `names`
(entry names and types, duplicate paths, root files), `archive` (end record, zip64, central
directory), `inflate` (local headers, streaming with measured sizes, compression ratio),
`dockerfile` (FROM allowlist, ARG resolution, ADD URLs, COPY --from) and `arena_toml`.
"""
from __future__ import annotations

from pathlib import Path

from intake.validation.archive import _read_directory, _sha256
from intake.validation.arena_toml import _check_arena_toml
from intake.validation.dockerfile import _check_dockerfile
from intake.validation.inflate import _check_ratio, _stream_entries
from intake.validation.names import _Layout
from sandbox.requirements import check as check_requirements
from intake.validation.rules import (
    MAX_NAME_BYTES,
    RATIO_FLOOR_BYTES,
    RULES,
    TEXT_FILE_CAP,
    Problem,
    SubmissionRejected,
    ValidatedSubmission,
    ValidationRules,
    _decode_text,
    _Findings,
    _mib,
)

__all__ = [
    "MAX_NAME_BYTES",
    "RATIO_FLOOR_BYTES",
    "RULES",
    "TEXT_FILE_CAP",
    "Problem",
    "SubmissionRejected",
    "ValidatedSubmission",
    "ValidationRules",
    "validate_zip",
]


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
        if (req_text := _decode_text("requirements.txt", req, found)) is not None:
            found.problems.extend(Problem(p.rule, p.value, p.message) for p in check_requirements(req_text)[1])
    meta = _check_arena_toml(texts.get("arena.toml"), found)
    if found.problems:
        raise SubmissionRejected(found.problems)
    return ValidatedSubmission(
        sha256=digest, compressed_bytes=size, uncompressed_bytes=measured or 0, entries=len(entries),
        base_images=base_images, challenge=meta.get("challenge"),
        display_name=meta.get("display_name"), notes=meta.get("notes"))
