"""A long-context retrieval probe in the spirit of HashHop.

Random codes are chained by assignments (``A1b2C3 = x9Y8z7``, ``x9Y8z7 = ...``)
written on their own lines inside filler text, shuffled and mixed with
distractor chains. The question gives the start of one chain and a hop count
and asks for the code reached. Random codes cannot be guessed from training
data, so a right answer means the model really found and followed the chain.

Hand-written because the HashHop reference is a dataset generator for a
specific harness, not a library; this needs a seeded generator sized in the
model's own tokens and a scorer that accepts what a person would.
"""

from __future__ import annotations

import random
import re
import string
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from optiq_tui.progress import Progress, ProgressFn, check_cancel, no_progress

CODE_LEN = 6
DISTRACTOR_CHAINS = 3
CHARS_PER_TOKEN = 4.0  # rough size of a token when no tokenizer is given

# Bland, original filler: it must not mention codes and should read as ordinary notes.
FILLER = (
    "The meeting moved to the small room on the second floor because the projector in the hall was broken.",
    "Someone left a box of pears by the door with a note saying they were free to anyone who wanted them.",
    "The bus timetable changed in spring, and the early service now leaves ten minutes sooner than before.",
    "A new bench was installed along the river path, facing west where the evening light is best.",
    "The library extended its hours on Thursdays, which suits people who work late in the week.",
    "Most of the tomatoes ripened at once this year, so the neighbours took turns making sauce.",
    "The bakery on the corner closes at two on Saturdays, earlier than most customers expect.",
    "After the storm the gutters on the east side overflowed and had to be cleared by hand.",
    "The choir rehearses in the church hall, where the acoustics flatter even the weaker voices.",
    "A stray cat has adopted the hardware shop and sleeps on the bags of compost by the window.",
    "The town council debated the parking rules for an hour and postponed the decision again.",
    "Painters finished the railings on the bridge, and the green is brighter than anyone remembered.",
    "The swimming pool will be closed for two weeks while the tiles at the shallow end are replaced.",
    "Children from the primary school planted a row of hazel along the edge of the playing field.",
    "The market stall that sells honey also sells candles, and the two smell the same in summer.",
    "Roadworks on the hill mean that deliveries arrive in the afternoon rather than the morning.",
    "The old clock on the station platform runs four minutes fast, and nobody seems to mind.",
    "A map of the walking routes was pinned up in the post office, with the steep parts marked in red.",
    "The café started serving soup at lunchtime, a different one each day, written on a chalkboard.",
    "Volunteers counted birds in the marsh on Sunday and recorded more herons than last year.",
    "The ferry timetable is printed in small type, so most people check it twice before travelling.",
    "A quiet lane behind the allotments floods after heavy rain and is best avoided in winter.",
    "The second-hand bookshop sorts its shelves by colour, which delights some visitors and annoys others.",
    "Wind turned the weather vane on the barn all night, and by morning the rain had passed.",
)


@dataclass(frozen=True)
class Probe:
    """One question: the prompt to send, and what the right answer is."""

    prompt: str
    start: str
    chain: tuple[str, ...]  # start, intermediate codes, and the answer (chain[-1])
    hops: int
    context_tokens: int  # the size asked for
    seed: int
    codes: frozenset[str]  # every code written in the prompt (the chain's and distractors')

    @property
    def answer(self) -> str:
        return self.chain[-1]


def make_probe(hops: int, context_tokens: int, seed: int, tokenizer: Any = None) -> Probe:
    """A probe of about ``context_tokens`` tokens asking to follow ``hops`` assignments.

    With a ``tokenizer`` (anything with ``encode``) the prompt is sized in its
    tokens; without one, by a characters-per-token estimate.
    """
    if hops < 1:
        raise ValueError("a probe needs at least one hop")
    rng = random.Random(seed)
    n_chains = 1 + DISTRACTOR_CHAINS
    codes = _unique_codes(rng, n_chains * (hops + 1))
    chains = [codes[i * (hops + 1) : (i + 1) * (hops + 1)] for i in range(n_chains)]
    lines = [f"{a} = {b}" for chain in chains for a, b in zip(chain, chain[1:])]
    rng.shuffle(lines)

    question = _question(chains[0][0], hops)
    head = (
        "Read the notes below. Some lines assign a value to a code, written as CODE = VALUE, "
        "where the value is itself a code.\n\n"
    )
    count = _counter(tokenizer)
    budget = context_tokens - count(head) - count(question) - sum(count(line) + 1 for line in lines)
    filler = _filler(rng, budget, count)

    # Spread the assignment lines through the filler at random paragraph breaks.
    slots = sorted(rng.randint(0, len(filler)) for _ in lines)
    body: list[str] = []
    it = iter(lines)
    for i in range(len(filler) + 1):
        while slots and slots[0] == i:
            slots.pop(0)
            body.append(next(it))
        if i < len(filler):
            body.append(filler[i])
    prompt = head + "\n\n".join(body) + "\n\n" + question
    return Probe(
        prompt=prompt,
        start=chains[0][0],
        chain=tuple(chains[0]),
        hops=hops,
        context_tokens=context_tokens,
        seed=seed,
        codes=frozenset(codes),
    )


def score(answer: str, probe: Probe) -> float:
    """1.0 when the answer states the right code and no other candidate, else 0.0.

    Accepted as a person would: quotes, backticks, bold, trailing punctuation,
    the code inside a sentence, or the chain written out (``a → b → c`` or
    ``a = b, b = c``). Mentioning the start or intermediate codes is fine, as
    they are steps; any other code (a distractor from the prompt, or a made-up
    one) is a second candidate and makes it wrong. Codes are matched exactly,
    case included, since case is part of a code.
    """
    mentioned = {w for w in _CODE_RE.findall(answer) if _code_shaped(w)}
    steps = set(probe.chain[:-1])
    candidates = mentioned - steps
    return 1.0 if candidates == {probe.answer} else 0.0


@dataclass(frozen=True)
class ProbeCase:
    """One generated answer to one probe."""

    context_tokens: int
    hops: int
    seed: int
    prompt_tokens: int
    expected: str
    answer: str
    score: float


@dataclass(frozen=True)
class RetrievalResult:
    """All cases of a probe run, with the mean score per (context, hops) cell."""

    cases: tuple[ProbeCase, ...] = field(default_factory=tuple)

    @property
    def mean(self) -> float | None:
        if not self.cases:
            return None
        return sum(c.score for c in self.cases) / len(self.cases)

    def by_cell(self) -> dict[tuple[int, int], float]:
        """Mean score per ``(context_tokens, hops)``."""
        cells: dict[tuple[int, int], list[float]] = {}
        for c in self.cases:
            cells.setdefault((c.context_tokens, c.hops), []).append(c.score)
        return {k: sum(v) / len(v) for k, v in sorted(cells.items())}


DEFAULT_CONTEXTS = (512, 1024, 2048)
DEFAULT_HOPS = (1, 2)


def probe_plan(
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    hops: Sequence[int] = DEFAULT_HOPS,
    trials: int = 2,
    max_context: int | None = None,
) -> list[tuple[int, int, int]]:
    """The ``(context_tokens, hops, seed)`` cases a run makes; contexts beyond the model's are left out."""
    usable = [c for c in contexts if max_context is None or c <= max_context]
    return [(c, h, 1000 * c + 10 * h + t) for c in usable for h in hops for t in range(trials)]


def run_probe(
    loaded: Any,
    *,
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    hops: Sequence[int] = DEFAULT_HOPS,
    trials: int = 2,
    max_answer_tokens: int = 48,
    progress: ProgressFn = no_progress,
    cancel: threading.Event | None = None,
) -> RetrievalResult:
    """Ask ``loaded`` (``.model``, ``.tokenizer``; optional ``.format`` and ``.info``) every probe, greedily.

    Contexts longer than the model's context length (from ``.info``) are skipped.
    Prompts go through the model's chat format when it has one, so instruct
    models are asked the way users ask them; only the answer part of a
    reasoning model's output is scored.
    """
    info = getattr(loaded, "info", None)
    plan = probe_plan(contexts, hops, trials, getattr(info, "context_length", None))
    cases: list[ProbeCase] = []
    for i, (ctx, k, seed) in enumerate(plan):
        check_cancel(cancel)
        progress(Progress("retrieval", i, len(plan), f"{ctx} tokens, {k} hop(s)", "probes"))
        probe = make_probe(k, ctx, seed, loaded.tokenizer)
        n_prompt, answer = _generate_answer(loaded, probe.prompt, max_answer_tokens, cancel)
        cases.append(ProbeCase(ctx, k, seed, n_prompt, probe.answer, answer, score(answer, probe)))
    progress(Progress("retrieval", len(plan), len(plan), "done", "probes"))
    return RetrievalResult(tuple(cases))


# A code is a maximal run of letters and digits; codes are never part of a longer word.
_CODE_RE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{%d}(?![A-Za-z0-9])" % CODE_LEN)


def _code_shaped(word: str) -> bool:
    """At least two letters and two digits: no English word or plain number looks like a code."""
    letters = sum(ch.isalpha() for ch in word)
    return letters >= 2 and len(word) - letters >= 2


def _unique_codes(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct code-shaped codes."""
    alphabet = string.ascii_letters + string.digits
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        code = "".join(rng.choice(alphabet) for _ in range(CODE_LEN))
        if code in seen or not _code_shaped(code):
            continue
        seen.add(code)
        out.append(code)
    return out


def _question(start: str, hops: int) -> str:
    if hops == 1:
        return f"Question: what is the value assigned to {start}? Reply with the code only."
    return (
        f"Question: start at {start}. Find the value assigned to it, then the value assigned "
        f"to that value, and so on, following {hops} assignments in all. Which code do you "
        f"end on? Reply with the final code only."
    )


def _counter(tokenizer: Any):
    if tokenizer is None:
        return lambda text: max(1, round(len(text) / CHARS_PER_TOKEN))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def _filler(rng: random.Random, budget: int, count) -> list[str]:
    """Paragraphs of filler sentences adding up to at most ``budget`` tokens (nearly all of it)."""
    sizes = {s: count(s + " ") for s in FILLER}
    smallest = min(sizes.values())
    paragraphs: list[str] = []
    current: list[str] = []
    used = 0
    while budget - used >= smallest + 1:
        sentence = rng.choice(FILLER)
        if used + sizes[sentence] + 1 > budget:
            continue  # too long for what is left; a shorter one will come
        current.append(sentence)
        used += sizes[sentence]
        if len(current) >= rng.randint(3, 6):
            paragraphs.append(" ".join(current))
            used += 1  # the paragraph break
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def _format(loaded: Any) -> Any:
    fmt = getattr(loaded, "format", None)
    if fmt is None:
        from optiq_tui.engine.formats import select_format

        info = getattr(loaded, "info", None)
        fmt = select_format(getattr(info, "model_type", None), loaded.tokenizer)
    return fmt


def _generate_answer(
    loaded: Any, user_text: str, max_tokens: int, cancel: threading.Event | None
) -> tuple[int, str]:
    """(prompt tokens, greedy answer text); only the answer channel of reasoning models.

    The lowest reasoning effort: the probe measures retrieval, not reasoning length.
    """
    from mlx_lm import stream_generate

    fmt = _format(loaded)
    prompt_ids = fmt.render([{"role": "user", "content": user_text}], "low")
    parser = fmt.new_parser(prompt_ids)
    parts: list[str] = []
    for response in stream_generate(loaded.model, loaded.tokenizer, prompt_ids, max_tokens=max_tokens):
        check_cancel(cancel)
        parts.extend(_answer_texts(parser.feed(response.token, response.text)))
        if response.finish_reason is not None:
            break
    parts.extend(_answer_texts(parser.finish()))
    return len(prompt_ids), "".join(parts).strip()


def _answer_texts(events: Iterable[Any]) -> list[str]:
    from optiq_tui.engine.events import AnswerDelta

    return [e.text for e in events if isinstance(e, AnswerDelta)]
