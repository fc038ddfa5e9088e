"""A submission's Dockerfile read the way Docker's classic builder reads it, and the rules it must meet.

The classic builder (moby's `parser` package, no BuildKit) reads a Dockerfile like this, and so does
`parse` below: lines end at "\\n" (one trailing "\\r" dropped; a UTF-8 BOM dropped); leading spaces
and tabs are stripped; a line whose first non-blank character is `#` is a comment, also inside a
continuation; a line ending in the escape character (then optional spaces/tabs) continues on the
next line, joined with nothing in between, and blank lines inside a continuation are skipped; the
parser directives (`# escape=`) come first, before any other line. The instruction's keyword is
the first word, case-insensitive.

Everything where two readers could disagree is refused rather than interpreted, so the validator
and the builder always see the same one image: heredocs (`<<` anywhere in an instruction; the
classic builder has none, BuildKit would read a body the validator skips), any parser directive but
`escape` (`# syntax=` would hand the file to another frontend), control characters and non-ASCII
white space (line and word splitting differ between Go and Python there), a second FROM
(multi-stage), variables or flags in FROM, `COPY --from`, flags on RUN (BuildKit's `--mount`,
`--network`), ADD of anything but a plain local path (no URL, variable, quote or escape), ONBUILD
and unknown instructions. Every refusal names its rule, the line and the text.

Used twice: by intake's validation before a submission is queued and by `sandbox.build` before the
build, so a Dockerfile that reached the bucket some other way is held to the same rules.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

#: The official base images a submission may build FROM (scripts/build-images.sh builds them).
OFFICIAL_BASE_IMAGES = ("arena/python-cpu:1", "arena/torch-cuda:1")

#: What each rule code means, in the words that end every refusal.
RULES: dict[str, str] = {
    "dockerfile.invalid": "the Dockerfile must parse",
    "dockerfile.no_from": "a Dockerfile needs a FROM",
    "dockerfile.from_not_allowed": "FROM must name an official base image ({allowed})",
    "dockerfile.multi_stage": "one FROM only: multi-stage builds are not accepted",
    "dockerfile.from_arg": "FROM names its image literally: no build arguments, variables or flags",
    "dockerfile.copy_from": "COPY --from is not accepted: copy files from the build context",
    "dockerfile.add_url": "ADD copies plain local paths only: no URL, variable, quote or escape",
    "dockerfile.heredoc": "no heredocs ('<<'): the classic builder has none, so they would be read differently",
    "dockerfile.directive": "no parser directives but '# escape=' at the top ('# syntax=' selects another builder)",
    "dockerfile.characters": "no control characters or non-ASCII white space outside comments",
    "dockerfile.flag": "no flags on RUN, FROM or ONBUILD, and only --chown/--chmod on COPY and ADD",
    "dockerfile.instruction": "only the classic builder's instructions, and no ONBUILD",
}

#: The classic builder's instructions, minus ONBUILD (refused: it runs in another build).
INSTRUCTIONS = frozenset({"from", "run", "cmd", "label", "maintainer", "expose", "env", "add", "copy",
                          "entrypoint", "volume", "user", "workdir", "arg", "stopsignal", "healthcheck",
                          "shell"})
_DIRECTIVE = re.compile(r"^#[ \t]*([A-Za-z][A-Za-z0-9]*)[ \t]*=[ \t]*(.*?)[ \t]*$")
_SYNTAX_ANYWHERE = re.compile(r"^#[ \t]*syntax[ \t]*=", re.I)
_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9._/*?+@,=-][A-Za-z0-9._/*?+@,= -]*$")
_COPY_FLAG = re.compile(r"^--(chown|chmod)=[A-Za-z0-9._:-]+$")


@dataclass(frozen=True)
class Instruction:
    line: int          # first physical line (1-based)
    end: int           # last physical line
    keyword: str       # upper case
    flags: tuple[str, ...]
    args: str          # the rest of the logical line, flags removed
    text: str          # the logical line as the builder sees it

    def words(self) -> list[str]:
        return self.args.split()


@dataclass(frozen=True)
class Problem:
    rule: str
    value: str
    message: str


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    escape: str
    problems: tuple[Problem, ...]
    base_image: str | None     # the one FROM's image, when it is allowed
    from_line: int | None

    @property
    def ok(self) -> bool:
        return not self.problems


def _problem(rule: str, value: str, what: str, allowed: tuple[str, ...]) -> Problem:
    why = RULES[rule].format(allowed=", ".join(allowed))
    return Problem(rule, value, f"{what} (rule {rule}: {why})")


def _bad_character(line: str) -> str | None:
    for ch in line:
        if ch == "\t":
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp") or (ch != " " and (cat == "Zs" or ch.isspace())) or ch == "\ufeff":
            return ch
    return None


def parse(text: str, allowed: tuple[str, ...] = OFFICIAL_BASE_IMAGES) -> Dockerfile:
    """Read a Dockerfile as the classic builder does and check every rule; see the module docstring."""
    problems: list[Problem] = []

    def refuse(rule: str, line: int, value: str, what: str, text: str | None = None) -> None:
        """`what` names the construct, `value` is the offending part, `text` the whole logical line."""
        def cut(v: str) -> str:
            return v if len(v) <= 200 else v[:200] + "..."
        where = f" in '{cut(text)}'" if text is not None and text != value else ""
        problems.append(_problem(rule, cut(value), f"Dockerfile line {line}: {what} '{cut(value)}'{where}", allowed))

    text = text.removeprefix("\ufeff")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    # Parser directives: only a leading run of `# name=value` lines; we accept one `escape` there.
    escape = "\\"
    seen_escape = False
    header_end = 0
    for number, raw in enumerate(lines, 1):
        m = _DIRECTIVE.match(raw.lstrip(" \t"))
        if not m:
            break
        header_end = number
        name, value = m.group(1).lower(), m.group(2)
        if name == "escape" and not seen_escape and value in ("\\", "`"):
            escape, seen_escape = value, True
        else:
            refuse("dockerfile.directive", number, raw.strip(), "parser directive")
    for number, raw in enumerate(lines, 1):
        if number > header_end and _SYNTAX_ANYWHERE.match(raw.lstrip(" \t")):
            refuse("dockerfile.directive", number, raw.strip(), "syntax directive")
        stripped = raw.lstrip(" \t")
        if stripped.startswith("#"):
            continue
        bad = _bad_character(raw)
        if bad is not None:
            refuse("dockerfile.characters", number, f"U+{ord(bad):04X}",
                   f"{unicodedata.name(bad, 'control character')}", raw.strip())

    def continued(line: str) -> tuple[str, bool]:
        body = line.rstrip(" \t")
        if body.endswith(escape):
            return body[:-1], True
        return line, False

    instructions: list[Instruction] = []
    i = 0
    while i < len(lines):
        start = i + 1
        first = lines[i].lstrip(" \t")
        i += 1
        if first.startswith("#"):
            continue
        logical, more = continued(first)
        if not more and not logical.strip(" \t"):
            continue
        while more and i < len(lines):
            raw = lines[i]
            i += 1
            if raw.lstrip(" \t").startswith("#") or not raw.strip(" \t"):
                continue
            part, more = continued(raw)
            logical += part
        logical = logical.strip(" \t")
        if not logical:
            continue
        keyword, _, rest = logical.replace("\t", " ").partition(" ")
        rest = logical[len(keyword):].strip(" \t")
        words = rest.split()
        flags = []
        while words and words[0].startswith("--"):
            flags.append(words.pop(0))
        args = rest
        for flag in flags:
            args = args[args.index(flag) + len(flag):].lstrip(" \t")
        instructions.append(Instruction(start, i, keyword.upper(), tuple(flags), args, logical))

    base, from_line = None, None
    for ins in instructions:
        kw = ins.keyword
        if "<<" in ins.text:
            refuse("dockerfile.heredoc", ins.line, ins.text[ins.text.index("<<"):].split()[0], f"{kw} with a heredoc", ins.text)
        if kw.lower() not in INSTRUCTIONS:
            refuse("dockerfile.instruction", ins.line, kw, "the instruction", ins.text)
            continue
        if from_line is None and kw not in ("FROM", "ARG"):
            refuse("dockerfile.invalid", ins.line, kw, "an instruction before the FROM:", ins.text)
        if kw == "FROM":
            if from_line is not None:
                refuse("dockerfile.multi_stage", ins.line, ins.args, f"a second FROM (the first is on line "
                       f"{from_line}):", ins.text)
                continue
            from_line = ins.line
            words = ins.words()
            if ins.flags:
                refuse("dockerfile.flag", ins.line, " ".join(ins.flags), "FROM with the flag", ins.text)
            if not words or (len(words) > 1 and (len(words) != 3 or words[1].lower() != "as")):
                refuse("dockerfile.invalid", ins.line, ins.text, "cannot read")
                continue
            image = words[0]
            if "$" in image:
                refuse("dockerfile.from_arg", ins.line, image, "FROM with a variable:", ins.text)
            elif not _IMAGE_REF.match(image) or image not in allowed:
                refuse("dockerfile.from_not_allowed", ins.line, image, "FROM an image that is not an official "
                       "base image:", ins.text)
            else:
                base = image
        elif kw in ("COPY", "ADD"):
            for flag in ins.flags:
                if flag.startswith("--from"):
                    refuse("dockerfile.copy_from", ins.line, flag.partition("=")[2] or flag, f"{kw} --from", ins.text)
                elif not _COPY_FLAG.match(flag):
                    refuse("dockerfile.flag", ins.line, flag, f"{kw} with the flag", ins.text)
            if kw == "ADD":
                _check_add(ins, escape, refuse)
        elif kw == "RUN" and ins.flags:
            refuse("dockerfile.flag", ins.line, " ".join(ins.flags), "RUN with the flag", ins.text)
    if from_line is None:
        problems.append(_problem("dockerfile.no_from", "Dockerfile", "the Dockerfile has no FROM instruction",
                                 allowed))
    return Dockerfile(tuple(instructions), escape, tuple(problems), base if not problems else None, from_line)


def _check_add(ins: Instruction, escape: str, refuse) -> None:
    """ADD only copies plain local paths: either form, every argument, nothing the shell lexer or the
    builder's URL/git detection could turn into a fetch."""
    candidates = ins.args.split()
    if ins.args.startswith("["):
        try:
            parsed = json.loads(ins.args)
            if isinstance(parsed, list):
                candidates = [p if isinstance(p, str) else json.dumps(p) for p in parsed]
        except json.JSONDecodeError:
            pass
    for arg in candidates:
        if (not _PLAIN_PATH.match(arg.strip()) or "://" in arg or escape in arg
                or arg.strip().startswith("git@")):
            refuse("dockerfile.add_url", ins.line, arg.strip(), "ADD of something other than a plain local path:",
                   ins.text)
            return


def parse_bytes(data: bytes, allowed: tuple[str, ...] = OFFICIAL_BASE_IMAGES) -> Dockerfile:
    try:
        return parse(data.decode("utf-8"), allowed)
    except UnicodeDecodeError as err:
        problem = _problem("dockerfile.invalid", "Dockerfile", f"the Dockerfile is not UTF-8 text (byte {err.start})",
                           allowed)
        return Dockerfile((), "\\", (problem,), None, None)

