"""Regenerate a challenge's public prompts and reference outputs.

    python -m challenges.generate_reference efficient-decode

Writes ``challenges/<name>/prompts.json`` (from ``workload.public_seed``) and ``reference.json``
(greedy outputs of the reference model). Tests check that the stored files equal a fresh run, so run
this after any change to the model, the prompt generator or the workload.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from challenges import Challenge, challenge_names, load_challenge


def dump_rows(header: dict, key: str, rows: list[list[int]]) -> str:
    """JSON with one row per line: small diffs, easy to eyeball."""
    head = json.dumps(header, sort_keys=True)[:-1]
    body = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in rows)
    return f'{head}, "{key}": [\n{body}\n]}}\n'


def prompts_document(challenge: Challenge) -> str:
    prompts = challenge.generate_public_prompts()
    return dump_rows({"challenge": challenge.name, "seed": challenge.prompts.public_seed},
                     "prompts", prompts)


def reference_document(challenge: Challenge, prompts: list[list[int]]) -> str:
    header = {"challenge": challenge.name, "model_seed": challenge.model_config.seed,
              "max_new_tokens": challenge.max_new_tokens}
    return dump_rows(header, "outputs", challenge.reference(prompts))


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("challenge", choices=challenge_names())
    args = parser.parse_args(argv)
    challenge = load_challenge(args.challenge)
    _write(challenge.root / "prompts.json", prompts_document(challenge))
    _write(challenge.root / "reference.json", reference_document(challenge, challenge.public_prompts()))
    print(f"wrote {challenge.root / 'prompts.json'} and reference.json "
          f"({len(challenge.public_prompts())} prompts x {challenge.max_new_tokens} tokens)")


if __name__ == "__main__":
    main()
