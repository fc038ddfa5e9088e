"""The Dockerfile rules: every FROM (and COPY --from / RUN --mount from=) names an allowed base
image or an earlier stage, with ARG defaults resolved; ADD never fetches a URL."""
from __future__ import annotations

import json
import re
from typing import Callable, Iterator

from intake.validation.rules import ValidationRules, _decode_text, _Findings

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|git@)")
_HEREDOC = re.compile(r"<<(-?)[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?")


def _expand(text: str, env: dict[str, str | None], strict: bool = False) -> str | None:
    """Docker's $VAR, ${VAR}, ${VAR:-word}, ${VAR:+word} (and without ':').

    None when syntax we do not know is left over, or (strict) when a variable has no value.
    """
    unset = False

    def sub(m: re.Match) -> str:
        nonlocal unset
        name = m.group(1) or m.group(4)
        value, op, word = env.get(name), m.group(2), m.group(3) or ""
        if op in (":-", "-"):
            return word if (value is None or (op == ":-" and value == "")) else value
        if op in (":+", "+"):
            return word if (value is not None and (op == "+" or value != "")) else ""
        unset = unset or value is None
        return value or ""
    out = _VAR.sub(sub, text)
    return None if "$" in out or (strict and unset) else out


def _instructions(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, KEYWORD, arguments) for each logical Dockerfile line; heredoc bodies skipped."""
    lines = text.splitlines()
    escape = "\\"
    for line in lines:  # parser directives come first, before any comment or instruction
        m = re.fullmatch(r"\s*#\s*([A-Za-z]+)\s*=\s*(\S+)\s*", line)
        if not m:
            break
        if m.group(1).lower() == "escape" and m.group(2) in ("`", "\\"):
            escape = m.group(2)
    i = 0
    while i < len(lines):
        start, parts = i + 1, []
        while i < len(lines):
            line = lines[i]
            i += 1
            if line.lstrip().startswith("#") or (parts and not line.strip()):
                continue
            stripped = line.rstrip()
            if stripped.endswith(escape):
                parts.append(stripped[:-1])
                continue
            parts.append(line)
            break
        logical = " ".join(parts).strip()
        if not logical:
            continue
        keyword, _, rest = logical.partition(" ")
        for dash, marker in _HEREDOC.findall(rest) if keyword.upper() in ("RUN", "COPY", "ADD") else ():
            while i < len(lines) and (lines[i].strip() if dash else lines[i]) != marker:
                i += 1
            i += 1
        yield start, keyword.upper(), rest.strip()


def _check_dockerfile(data: bytes | None, rules: ValidationRules, found: _Findings) -> tuple[str, ...]:
    """Every FROM (and COPY --from / RUN --mount from=) must be an allowed image or an earlier stage."""
    if data is None:
        return ()
    text = _decode_text("Dockerfile", data, found)
    if text is None:
        return ()
    global_args: dict[str, str | None] = {}
    env: dict[str, str | None] = {}
    stages: dict[str, str | None] = {}  # stage name -> its base image (None if refused)
    bases: list[str | None] = []

    def source_allowed(line: int, keyword: str, ref: str) -> str | None:
        resolved = _expand(ref, global_args if keyword == "FROM" else env, strict=True)
        if resolved is not None and resolved.lower() in stages:
            return stages[resolved.lower()]
        if resolved is not None and keyword != "FROM" and resolved.isdigit() and int(resolved) < len(bases):
            return bases[int(resolved)]
        if resolved is not None and resolved in rules.allowed_base_images:
            return resolved
        if resolved is None:
            detail = "uses a build argument without a default (or syntax we cannot resolve)"
        elif resolved != ref:
            detail = f"resolves to '{resolved}' with its ARG defaults, which is not an official base image"
        else:
            detail = "is not an official base image"
        found.add("dockerfile.from_not_allowed", resolved or ref,
                  f"Dockerfile line {line}: {keyword} '{ref}' {detail}")
        return None

    for line, keyword, rest in _instructions(text):
        if keyword == "ARG":
            for name, default in _assignments(rest):
                # Inside a stage, a bare `ARG NAME` brings in the global default, if any.
                value = _expand(default, env) if default is not None else global_args.get(name)
                if not bases:
                    global_args[name] = value
                env[name] = value
        elif keyword == "ENV":
            for name, value in _assignments(rest, env_style=True):
                env[name] = _expand(value or "", env)
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words or (len(words) > 1 and (len(words) != 3 or words[1].lower() != "as")):
                found.add("dockerfile.invalid", f"FROM {rest}", f"Dockerfile line {line}: cannot read 'FROM {rest}'")
                bases.append(None)
                continue
            base = source_allowed(line, "FROM", words[0])
            bases.append(base)
            if len(words) == 3:
                stages[words[2].lower()] = base
        elif keyword in ("COPY", "ADD", "RUN"):
            _check_sources(line, keyword, rest, env, found, source_allowed)
    if not bases:
        found.add("dockerfile.no_from", "Dockerfile", "the Dockerfile has no FROM instruction")
    return tuple(b for b in bases if b is not None)


def _check_sources(line: int, keyword: str, rest: str, env: dict[str, str | None], found: _Findings,
                   source_allowed: Callable[[int, str, str], str | None]) -> None:
    """COPY --from and RUN --mount from= name stages or allowed images; ADD sources are not URLs."""
    words = rest.split()
    flags = []
    while words and words[0].startswith("--"):
        flags.append(words.pop(0))
    for flag in flags:
        if keyword == "COPY" and flag.startswith("--from="):
            source_allowed(line, "COPY --from", flag.removeprefix("--from="))
        if keyword == "RUN" and flag.startswith("--mount="):
            for option in flag.removeprefix("--mount=").split(","):
                key, _, value = option.partition("=")
                if key == "from" and value:
                    source_allowed(line, "RUN --mount from", value)
    if keyword != "ADD":
        return
    body = " ".join(words)
    try:
        args = json.loads(body) if body.startswith("[") else words
    except json.JSONDecodeError:
        args = words
    for src in args[:-1]:
        if not isinstance(src, str) or src.startswith("<<"):
            continue
        resolved = _expand(src, env)
        if resolved is None or _URL.match(src) or _URL.match(resolved):
            found.add("dockerfile.add_url", src, f"Dockerfile line {line}: ADD '{src}' "
                      + ("uses a variable that cannot be resolved, so it may be a URL"
                         if resolved is None else "fetches a URL"))


def _assignments(rest: str, env_style: bool = False) -> Iterator[tuple[str, str | None]]:
    """ARG NAME[=default] ...; ENV NAME=value ... or the legacy ENV NAME value."""
    words = rest.split()
    if env_style and words and "=" not in words[0]:
        yield words[0], rest[len(words[0]):].strip()
        return
    for word in words:
        name, eq, value = word.partition("=")
        yield name, (value.strip("\"'") if eq else None)
