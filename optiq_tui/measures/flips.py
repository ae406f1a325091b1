"""Flips: the share of a fixed set of greedy prompts whose answer changes against the source.

Mean KL can improve while a quant answers a plain fact wrongly (the demo's
optiq-best once said "Monaco" for the capital of France); a flip count on
fixed prompts catches what an average hides. As in Dutta et al. 2024
("Accuracy is Not All You Need"), a flip is an answer that goes from right to
wrong or from wrong to right: each shipped prompt carries the answer it
expects, so rewording ("Paris." vs "The capital is Paris") is not a flip.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Sequence

ANSWER_TOKENS = 24


@dataclass(frozen=True)
class Flips:
    """Prompts whose greedy answers differ between the source and the model."""

    changed: tuple[int, ...]  # indices into ``prompts``
    prompts: tuple[str, ...]
    source_answers: tuple[str, ...]
    answers: tuple[str, ...]

    @property
    def rate(self) -> float:
        return len(self.changed) / len(self.prompts) if self.prompts else float("nan")


@cache
def _expected() -> dict[str, tuple[str, ...]]:
    """Shipped prompt -> the regular expressions its right answer matches (all of them)."""
    text = resources.files("optiq_tui").joinpath("data/flip_prompts.json").read_text()
    return {p["prompt"]: tuple(p["expect"]) for p in json.loads(text)["prompts"]}


def flip_prompts() -> list[str]:
    """The shipped prompt set (optiq_tui/data/flip_prompts.json)."""
    return list(_expected())


def is_right(prompt: str, answer: str) -> bool | None:
    """Whether ``answer`` gives what the shipped ``prompt`` expects; None for a prompt
    outside the shipped set (no known answer)."""
    expect = _expected().get(prompt)
    if expect is None:
        return None
    return all(re.search(e, answer, re.IGNORECASE) for e in expect)


def _render(tokenizer: Any, prompt: str | list[dict[str, str]]) -> str:
    """A user prompt, or a conversation ending in a user turn, ready for the reply."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if isinstance(prompt, str):
        return prompt
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def normalize(answer: str) -> str:
    """Case, spacing and trailing punctuation do not make a different answer."""
    return re.sub(r"\s+", " ", answer).strip().rstrip(".!").casefold()


def greedy_answers(model: Any, tokenizer: Any, prompts: Sequence[str | list[dict[str, str]]],
                   max_tokens: int = ANSWER_TOKENS) -> list[str]:
    """Each prompt's greedy (temperature 0) answer, through the tokenizer's chat template;
    a prompt is a user message or a conversation ending in one."""
    from mlx_lm import generate
    from mlx_lm.sample_utils import make_sampler

    greedy = make_sampler(0.0)
    return [generate(model, tokenizer, _render(tokenizer, p), max_tokens=max_tokens,
                     sampler=greedy) for p in prompts]


def count_flips(source: tuple[Any, Any], model: tuple[Any, Any],
                prompts: Sequence[str] | None = None, max_tokens: int = ANSWER_TOKENS) -> Flips:
    """Compare greedy answers of two loaded (model, tokenizer) pairs on ``prompts``
    (default: the shipped set) with :func:`flipped`."""
    prompts = list(prompts) if prompts is not None else flip_prompts()
    ref = greedy_answers(*source, prompts, max_tokens)
    return compare_answers(prompts, ref, greedy_answers(*model, prompts, max_tokens))


def flipped(prompt: str, source_answer: str, answer: str) -> bool:
    """Right where the source is wrong, or wrong where it is right; a prompt with no known
    answer flips on any change of its :func:`normalize`d text."""
    right = is_right(prompt, answer)
    if right is None:
        return normalize(source_answer) != normalize(answer)
    return right != is_right(prompt, source_answer)


def compare_answers(prompts: Sequence[str], source_answers: Sequence[str],
                    answers: Sequence[str]) -> Flips:
    """Flips from answers generated apart (one model in memory at a time)."""
    changed = tuple(i for i, (p, a, b) in enumerate(zip(prompts, source_answers, answers))
                    if flipped(p, a, b))
    return Flips(changed, tuple(prompts), tuple(source_answers), tuple(answers))
