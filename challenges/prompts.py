"""English-like prompt text, generated deterministically from a seed and encoded as bytes.

Public and private prompts come from the same generator (different seeds, different streams), so
accuracy on the public set predicts accuracy on the private one while the private text stays
unknowable without the secret seed.
"""
from __future__ import annotations

import numpy as np

_NOUNS = """time year people way day man woman child world life hand part place case week company
system program question work government number night point home water room mother area money story
fact month lot right study book eye job word business issue side kind head house service friend
father power hour game line end member law car city community name president team minute idea kid
body information back parent face others level office door health person art war history party
result change morning reason research girl guy moment air teacher force education river garden
engine kernel cache token batch model server request queue signal bridge market winter harbor
lamp letter island mountain village storm window machine rocket violin recipe lantern""".split()
_ADJS = """good new first last long great little own other old right big high different small large
next early young important few public bad same able quiet bright cold warm sudden gentle heavy
narrow ancient modern simple strange careful rapid silent golden broken hidden patient curious
tiny clever empty crowded distant""".split()
_VERBS = """finds keeps builds reads writes moves holds brings leaves follows carries watches opens
changes measures decodes answers sends remembers paints breaks repairs tests counts""".split()
_VERBS_PAST = """found kept built read wrote moved held brought left followed carried watched opened
changed measured decoded answered sent remembered painted broke repaired tested counted""".split()
_ADVS = "slowly quickly often never always quietly carefully suddenly again together".split()
_PREPS = "in on under near behind across through over beside after before without".split()
_NAMES = "Ada Alan Grace Linus Marie Niels Emmy Claude Edsger Barbara Ken Dennis".split()
_CONJ = "and but so because while although".split()


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _noun_phrase(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.15:
        return _pick(rng, _NAMES)
    det = _pick(rng, ["the", "a", "every", "that", "my", "our", "the"])
    if r < 0.55:
        return f"{det} {_pick(rng, _ADJS)} {_pick(rng, _NOUNS)}"
    if r < 0.65:
        return f"{int(rng.integers(2, 999))} {_pick(rng, _NOUNS)}s"
    return f"{det} {_pick(rng, _NOUNS)}"


def _sentence(rng: np.random.Generator) -> str:
    verbs = _VERBS if rng.random() < 0.5 else _VERBS_PAST
    s = f"{_noun_phrase(rng)} {_pick(rng, verbs)} {_noun_phrase(rng)}"
    if rng.random() < 0.4:
        s += f" {_pick(rng, _PREPS)} {_noun_phrase(rng)}"
    if rng.random() < 0.3:
        s += f" {_pick(rng, _ADVS)}"
    if rng.random() < 0.25:
        s += f", {_pick(rng, _CONJ)} {_noun_phrase(rng)} {_pick(rng, verbs)} {_noun_phrase(rng)}"
    end = "." if rng.random() < 0.8 else _pick(rng, ["!", "?", ";", ":"])
    if end == "?":
        s = f"{_pick(rng, ['why', 'when', 'where', 'how'])} did {_noun_phrase(rng)} {_pick(rng, _VERBS_PAST)} it"
    return s[0].upper() + s[1:] + end


def english_text(rng: np.random.Generator, n_bytes: int) -> bytes:
    """At least ``n_bytes`` of sentences, cut to exactly ``n_bytes``."""
    parts: list[str] = []
    size = -1
    while size < n_bytes:
        sentence = _sentence(rng)
        parts.append(sentence)
        size += len(sentence) + 1
        if rng.random() < 0.08:
            parts.append("\n")
    return " ".join(parts).replace(" \n ", "\n").encode("ascii")[:n_bytes]


def generate_prompts(seed: int, count: int, min_len: int, max_len: int, stream: str) -> list[list[int]]:
    """``count`` prompts of lengths in [min_len, max_len] from (stream, seed); distinct streams never overlap."""
    stream_id = int.from_bytes(stream.encode(), "little")
    rng = np.random.default_rng([stream_id, seed])
    lengths = rng.integers(min_len, max_len + 1, size=count)
    return [list(english_text(rng, int(n))) for n in lengths]


#: draws allowed per wanted prompt before giving up (duplicates and public twins are redrawn)
MAX_DRAWS_PER_PROMPT = 50


class EnglishBytePrompts:
    """PromptSource kind ``english-bytes``: byte-level prompts of English-like text (the tiny challenge).

        [prompts]
        kind = "english-bytes"
        public = "prompts.json"        # the committed public prompts (public_seed)
        reference = "reference.json"   # their reference outputs
        public_seed = 1
        prompt_min_len = 16
        prompt_max_len = 64
    """

    kind = "english-bytes"

    def __init__(self, spec, root):
        from pathlib import Path

        from challenges.spec import Fields
        f = Fields(spec.prompts.table, f"{Path(root) / 'challenge.toml'} [prompts]")
        self.public_file = Path(root) / f.str("public", "prompts.json")
        self.reference_file = Path(root) / f.str("reference", "reference.json")
        self.public_seed = f.int("public_seed", 1)
        self.min_len = f.int("prompt_min_len", minimum=1)
        self.max_len = f.int("prompt_max_len", minimum=1)
        f.done()
        if self.max_len < self.min_len:
            raise ValueError(f"{root}/challenge.toml [prompts]: prompt_max_len {self.max_len} < "
                             f"prompt_min_len {self.min_len}")
        self.name, self.public_count = spec.name, spec.workload.public_prompts

    def public(self) -> list[list[int]]:
        import json
        return json.loads(self.public_file.read_text())["prompts"]

    def public_reference(self) -> list[list[int]]:
        import json
        return json.loads(self.reference_file.read_text())["outputs"]

    def generate_public(self) -> list[list[int]]:
        return generate_prompts(self.public_seed, self.public_count, self.min_len, self.max_len,
                                stream=f"public:{self.name}")

    def private(self, seed: int, count: int) -> list[list[int]]:
        """``count`` distinct prompts from the secret ``seed``, none equal to a public one; deterministic."""
        seen = set(map(tuple, self.public()))
        out: list[list[int]] = []
        for attempt in range(MAX_DRAWS_PER_PROMPT):
            # a fresh stream per attempt: only the shortfall is drawn again
            for p in generate_prompts(seed, count - len(out) if attempt else count, self.min_len, self.max_len,
                                      stream=f"private:{self.name}" + (f":{attempt}" if attempt else "")):
                if tuple(p) not in seen:
                    seen.add(tuple(p))
                    out.append(p)
            if len(out) == count:
                return out
        raise ValueError(f"the prompt generator gave only {len(out)} distinct prompts of the {count} asked for")
