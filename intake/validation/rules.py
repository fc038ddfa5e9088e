"""The rule vocabulary of submission validation: what each rule code means, the limits, what a
refusal and an accepted submission look like, and the collector every check reports into.

Every refusal is a `Problem` with a stable rule code, the offending value and a sentence naming
both; all problems are collected, then `SubmissionRejected` is raised once.
"""
from __future__ import annotations

from dataclasses import dataclass

from sandbox.dockerfile import OFFICIAL_BASE_IMAGES
from sandbox.dockerfile import RULES as DOCKERFILE_RULES
from sandbox.requirements import RULES as REQUIREMENTS_RULES

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
    **DOCKERFILE_RULES,   # dockerfile.*: sandbox/dockerfile.py, the reader intake and the build share
    **REQUIREMENTS_RULES,   # requirements.*: sandbox/requirements.py
    "arena_toml.invalid": "arena.toml must be valid TOML with string keys challenge, display_name, notes",
}

TEXT_FILE_CAP = 2**20
MAX_NAME_BYTES = 1024
# The compression-ratio rule ignores entries (and archives) that inflate to less than this: a few
# kilobytes of blank lines legitimately compress 200:1, and cannot hurt anyone.
RATIO_FLOOR_BYTES = 2**20
_TEXT_FILES = ("Dockerfile", "requirements.txt", "arena.toml")


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
    allowed_base_images: tuple[str, ...] = OFFICIAL_BASE_IMAGES
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


def _decode_text(name: str, data: bytes, found: _Findings) -> str | None:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        found.add("files.not_utf8", name, f"'{name}' is not UTF-8 text (byte {err.start})")
        return None
