"""The Dockerfile rules, checked with the same reader the build uses (`sandbox.dockerfile`): one FROM
naming an official base image literally, no construct the classic builder and the validator could
read differently (heredocs, `# syntax=`, multi-stage, ARG in FROM, COPY --from, ADD of anything but a
local path, unknown instructions)."""
from __future__ import annotations

from intake.validation.rules import Problem, ValidationRules, _decode_text, _Findings
from sandbox.dockerfile import parse


def _check_dockerfile(data: bytes | None, rules: ValidationRules, found: _Findings) -> tuple[str, ...]:
    """Every problem of the Dockerfile (rule, value, message naming the line); the base image behind
    its one FROM when there is none."""
    if data is None:
        return ()
    text = _decode_text("Dockerfile", data, found)
    if text is None:
        return ()
    parsed = parse(text, rules.allowed_base_images)
    found.problems.extend(Problem(p.rule, p.value, p.message) for p in parsed.problems)
    return (parsed.base_image,) if parsed.base_image else ()
