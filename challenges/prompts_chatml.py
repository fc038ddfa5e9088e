"""PromptSource kind ``chatml``: chat requests, rendered with the ChatML template and tokenized on
the host. Entries see token ids only; the text never enters the container.

    [prompts]
    kind = "chatml"
    public = "prompts.json"     # the committed public pool: each user message and its token ids
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

A prompt is ``<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{message}<|im_end|>\\n
<|im_start|>assistant\\n``: the template the model was tuned with (its GGUF's chat template with
one system message). The tokenizer is the challenge model's own (``model.tokenizer()``).

User messages come from one generator: an instruction template filled from word lists by a
``numpy`` generator seeded with (stream, seed). The public pool is that generator's output for a
public seed, committed; private prompts come from the per-evaluation secret seed on another stream.
So accuracy on the public pool predicts accuracy on private prompts, while private prompts cannot be
known without the seed. Private prompts are distinct and never equal a public one; the generator
spans millions of messages, so drawing thousands per evaluation stays far from exhausting it.
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from challenges.spec import ChallengeSpec, Fields

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
#: draws allowed per wanted prompt before giving up (duplicates and public twins are redrawn)
MAX_DRAWS_PER_PROMPT = 50

_TOPICS = """rainbows|volcanoes|tides|photosynthesis|vaccines|bridges|batteries|glaciers|bees|compilers|
earthquakes|the moon|solar panels|coffee|bread|yeast|magnets|clouds|rivers|deserts|forests|coral reefs|
the internet|email|airplanes|submarines|trains|bicycles|lighthouses|libraries|museums|chess|music|
telescopes|microscopes|maps|clocks|calendars|recycling|composting|rain|snow|wind|thunder|lightning|
electricity|gravity|friction|sound|light|colors|dreams|memory|sleep|exercise|gardening|cooking|
pottery|weaving|printing presses|satellites|rockets|robots|databases|spreadsheets|passwords""".replace(
    "\n", "").split("|")
_CREATURES = """fox|owl|whale|robot|dragon|tortoise|cat|dog|lighthouse keeper|baker|astronaut|sailor|
gardener|inventor|squirrel|elephant|penguin|child|grandmother|detective|musician|painter|mouse|
librarian|farmer|knight|wizard|beekeeper|clockmaker""".replace("\n", "").split("|")
_ADJS = """brave curious tiny old clever lonely cheerful quiet forgetful stubborn gentle tired proud
patient shy kind""".split()
_PLACES = """a small village|a busy city|an island|a mountain cabin|a desert town|a space station|a harbor|
a forest|a school|a market|a train station|a castle|a farm|a library|an old museum""".replace("\n", "").split("|")
_GOALS = """finds a lost key|learns to swim|builds a boat|plants a garden|writes a letter|fixes a clock|
climbs a hill|makes a new friend|bakes a cake|solves a mystery|paints a mural|saves a river|
discovers a map|crosses the sea|trains for a race|opens a shop""".replace("\n", "").split("|")
_AUDIENCES = "a child|a new student|a grandparent|a busy manager|a curious teenager|a beginner".split("|")
_ACTIVITIES = """learning a language|staying focused|saving money|running a meeting|writing an essay|
keeping a plant alive|sleeping better|starting to run|cooking for friends|moving to a new city|
studying for an exam|taking better photos|organizing a desk|learning to code""".replace("\n", "").split("|")
_THINGS = """trains and planes|cats and dogs|books and films|summer and winter|tea and coffee|
cities and villages|paper and screens|walking and cycling|oceans and lakes|stars and planets""".replace(
    "\n", "").split("|")

_TEMPLATES = (
    "Write a short story about {a_adj} {creature} who {goal} in {place}.",
    "Explain {topic} to {audience}.",
    "Give me five practical tips for {activity}.",
    "Describe {place} on a {weather} morning, in detail.",
    "Write a poem about {topic} and {a_adj} {creature}.",
    "What are the differences between {things}? Answer in a few paragraphs.",
    "Compare {topic} and {topic2} for {audience}.",
    "Write a letter from {a_adj} {creature} to {audience} about {topic}.",
    "List {n} interesting facts about {topic}, with one sentence each.",
    "Plan a {n}-day trip to {place} for {audience}.",
    "Tell me the history of {topic} as if you were {a_adj} {creature}.",
    "Write a dialogue between {a_creature} and {a_creature2} who disagree about {topic}.",
    "Explain step by step how to {task}.",
)
_WEATHER = "rainy sunny foggy snowy windy cold warm quiet".split()
_TASKS = """make a paper boat|brew a cup of tea|plant a tree|change a bicycle tire|bake bread|
write a haiku|wash a car|pack for a trip|set up a fish tank|make a budget|fold a shirt|build a birdhouse""".replace(
    "\n", "").split("|")


def user_message(rng: np.random.Generator) -> str:
    """One user message from the templates and word lists."""
    def pick(words):
        return words[int(rng.integers(len(words)))]
    template, adj, creature, creature2 = pick(_TEMPLATES), pick(_ADJS), pick(_CREATURES), pick(_CREATURES)
    return template.format(
        a_adj=_article(adj), creature=creature, a_creature=_article(creature), a_creature2=_article(creature2),
        goal=pick(_GOALS), topic2=pick(_TOPICS),
        place=pick(_PLACES),
        topic=pick(_TOPICS), audience=pick(_AUDIENCES), activity=pick(_ACTIVITIES), things=pick(_THINGS),
        weather=pick(_WEATHER), n=int(rng.integers(3, 8)), task=pick(_TASKS))


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def generate_messages(seed: int, count: int, stream: str, exclude: set[str] = frozenset()) -> list[str]:
    """``count`` distinct messages from (stream, seed), none in ``exclude``; deterministic."""
    rng = np.random.default_rng([int.from_bytes(stream.encode(), "little"), seed])
    out: list[str] = []
    seen = set(exclude)
    for _ in range(MAX_DRAWS_PER_PROMPT * max(count, 1)):
        if len(out) == count:
            return out
        message = user_message(rng)
        if message not in seen:
            seen.add(message)
            out.append(message)
    if len(out) == count:
        return out
    raise ValueError(f"the prompt generator gave only {len(out)} distinct messages of the {count} asked for")


def chatml(system: str, message: str) -> str:
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{message}<|im_end|>\n"
            f"<|im_start|>assistant\n")


class ChatmlPrompts:
    """The prompts of a challenge whose ``[prompts] kind`` is ``chatml``; ``model`` gives the tokenizer."""

    kind = "chatml"

    def __init__(self, spec: ChallengeSpec, root: Path, model=None):
        f = Fields(spec.prompts.table, f"{Path(root) / 'challenge.toml'} [prompts]")
        self.public_file = Path(root) / f.str("public", "prompts.json")
        self.system = f.str("system", DEFAULT_SYSTEM)
        self.public_seed = f.int("public_seed", 1)
        f.done()
        self.name = spec.name
        self._model = model

    @cached_property
    def _tokenizer(self):
        if self._model is None:
            raise RuntimeError(f"{self.name}: chatml prompts need the challenge model's tokenizer")
        return self._model.tokenizer()

    def encode(self, message: str) -> list[int]:
        return self._tokenizer.encode(chatml(self.system, message)).ids

    def public_document(self) -> dict:
        return json.loads(self.public_file.read_text())

    def public_messages(self) -> list[str]:
        return [row["message"] for row in self.public_document()["prompts"]]

    # ---- PromptSource ----------------------------------------------------------------------------

    def public(self) -> list[list[int]]:
        """The committed token ids (tests pin that they equal a fresh tokenization of the messages)."""
        return [list(row["tokens"]) for row in self.public_document()["prompts"]]

    def private_messages(self, seed: int, count: int) -> list[str]:
        return generate_messages(seed, count, stream=f"private:{self.name}", exclude=set(self.public_messages()))

    def private(self, seed: int, count: int) -> list[list[int]]:
        return [self.encode(m) for m in self.private_messages(seed, count)]

    def write_public(self, count: int) -> None:
        """Regenerate the committed pool (``python -m challenges.prompts_chatml smollm2-135m N``)."""
        messages = generate_messages(self.public_seed, count, stream=f"public:{self.name}")
        rows = ",\n".join("  " + json.dumps({"message": m, "tokens": self.encode(m)}, separators=(",", ":"))
                          for m in messages)
        header = json.dumps({"challenge": self.name, "seed": self.public_seed, "system": self.system})[:-1]
        self.public_file.write_text(f'{header}, "prompts": [\n{rows}\n]}}\n')


if __name__ == "__main__":   # regenerate a challenge's public pool
    import sys

    from challenges.models.llama_gguf import LlamaGguf
    from challenges.spec import load_spec
    root = Path(__file__).resolve().parent / sys.argv[1]
    spec = load_spec(root / "challenge.toml")
    ChatmlPrompts(spec, root, model=LlamaGguf(spec, root)).write_public(int(sys.argv[2]))
