"""arena.toml: optional metadata, valid TOML with string keys challenge, display_name, notes."""
from __future__ import annotations

import re
import tomllib

from intake.validation.rules import _decode_text, _Findings

_ARENA_TOML_KEYS = ("challenge", "display_name", "notes")
_CHALLENGE_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


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
