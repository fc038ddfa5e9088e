"""A submission's requirements.txt: plain package names with optional version constraints, nothing else.

Builds have no network. `sandbox.build` downloads the wheels of these requirements on the host (binary
wheels only: no sdist, so no participant `setup.py` ever runs on the host) into a wheelhouse that the
build installs from with `--no-index`. Anything pip would read as more than a name and a version range
is refused, naming the line: URLs and paths (`name @ https://...`, `./pkg`), editables (`-e`), options
(`--index-url`, `-r other.txt`, `--trusted-host`), environment markers and hashes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

RULES: dict[str, str] = {
    "requirements.line": "requirements.txt lines are package names with optional version constraints "
                         "(name[extra]==1.2, name>=1,<2): no URLs, paths, -e, options or markers",
}

_OP = r"(?:===|==|~=|!=|<=|>=|<|>)"
_VERSION = r"[A-Za-z0-9][A-Za-z0-9.*+!_-]*"
_SPEC = rf"{_OP}[ \t]*{_VERSION}"
_LINE = re.compile(
    rf"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    rf"(?:\[[A-Za-z0-9._-]+(?:[ \t]*,[ \t]*[A-Za-z0-9._-]+)*\])?"
    rf"(?:[ \t]*{_SPEC}(?:[ \t]*,[ \t]*{_SPEC})*)?$")


@dataclass(frozen=True)
class Problem:
    rule: str
    value: str
    message: str


def requirement_lines(text: str) -> list[tuple[int, str]]:
    """(line number, requirement) for each line that is not blank or a comment; comments after ` #` cut."""
    out = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if line.lstrip().startswith("#"):
            continue
        line = re.split(r"[ \t]#", line, maxsplit=1)[0].strip(" \t")
        if line:
            out.append((number, line))
    return out


def check(text: str) -> tuple[list[str], list[Problem]]:
    """The requirements (as written) and every refused line."""
    wanted, problems = [], []
    for number, line in requirement_lines(text):
        if _LINE.match(line):
            wanted.append(line)
        else:
            shown = line if len(line) <= 200 else line[:200] + "..."
            problems.append(Problem("requirements.line", shown,
                                    f"requirements.txt line {number}: '{shown}' is not a package name with "
                                    f"version constraints (rule requirements.line: {RULES['requirements.line']})"))
    return wanted, problems
