"""Build a Hugging Face `tokenizers` tokenizer from a GGUF file's vocabulary.

GGUF stores the vocabulary as plain lists (tokens, scores, token types,
merges) plus a few flags. `tokenizers` builds the tokenizer; this module only
maps llama.cpp's fields and pre-tokenizer names onto it. (transformers has a
GGUF tokenizer converter too, but it cannot be imported without PyTorch.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optiq_tui.progress import OptiqError

# llama.cpp token types (llama_token_type): 3 = control, 4 = user defined, 6 = byte.
_CONTROL, _USER_DEFINED = 3, 4

# Pre-tokenizer split patterns for llama.cpp's `tokenizer.ggml.pre` names (the
# regexes the original HF tokenizers use; see llama.cpp's llama-vocab.cpp).
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# o200k_base's split (gpt-oss; llama.cpp's "gpt-4o") and Mistral's Tekken, as their tokenizer.json files have them.
_CASED_WORDS = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+{c}"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*{c}"
)
_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_O200K_PATTERN = _CASED_WORDS.replace("{c}", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?") + r"|\p{N}{1,3}" + _TAIL
_TEKKEN_PATTERN = _CASED_WORDS.replace("{c}", "") + r"|\p{N}" + _TAIL
_SPLIT_PATTERNS = {
    "gpt-4o": _O200K_PATTERN,
    "tekken": _TEKKEN_PATTERN,
    "llama-bpe": _LLAMA3_PATTERN,
    "llama3": _LLAMA3_PATTERN,
    "smaug-bpe": _LLAMA3_PATTERN,
    "qwen2": _QWEN2_PATTERN,
    "deepseek-r1-qwen": _QWEN2_PATTERN,
}


# Names whose HF tokenizers split exactly as GPT-2's regex does (with digits apart for the latter three).
_GPT2_LIKE = {None, "default", "gpt2", "gpt-2", "smollm", "starcoder", "refact"}


def unknown_pre_tokenizer(meta: dict[str, Any]) -> str | None:
    """The file's BPE pre-tokenizer name when this module has no split for it (GPT-2's is used)."""
    pre = meta.get("tokenizer.ggml.pre")
    if meta.get("tokenizer.ggml.model") != "gpt2" or pre in _SPLIT_PATTERNS or pre in _GPT2_LIKE:
        return None
    return pre


def _pre_tokenizer(pre: str | None):
    from tokenizers import Regex, pre_tokenizers

    if pre in _SPLIT_PATTERNS:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLIT_PATTERNS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact"):
        # Their HF tokenizers split every digit on its own before the GPT-2 regex.
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    return byte_level  # "gpt2", "default" and unknown names: the GPT-2 regex


def _added_tokens(tokens: list[str], types: list[int]) -> list[Any]:
    from tokenizers import AddedToken

    added = []
    for token, kind in zip(tokens, types):
        if kind == _CONTROL:
            added.append(AddedToken(token, special=True, normalized=False))
        elif kind == _USER_DEFINED:
            added.append(AddedToken(token, special=False, normalized=False))
    return added


def _spm_merges(vocab: dict[str, int], scores: list[float]) -> list[tuple[str, str]]:
    """Merges for a SentencePiece BPE vocabulary that GGUF stores without them.

    A piece that can be split into two pieces of the vocabulary is reachable by
    merging them; merges are ranked by the merged piece's score (SentencePiece
    merges higher-scored pieces first).
    """
    ranked = []
    for piece, index in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-scores[index], index, left, right))
    ranked.sort()
    return [(left, right) for _, _, left, right in ranked]


def build_tokenizer(meta: dict[str, Any]):
    """A `tokenizers.Tokenizer` for the GGUF metadata ``meta`` (field -> value)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors

    kind = meta.get("tokenizer.ggml.model")
    tokens: list[str] | None = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise OptiqError("the GGUF file has no tokenizer vocabulary (tokenizer.ggml.tokens)")
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    vocab = {token: i for i, token in enumerate(tokens)}
    merges_raw = meta.get("tokenizer.ggml.merges") or []
    merges = [tuple(m.split(" ", 1)) for m in merges_raw]

    if kind == "gpt2":
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        tok.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre"))
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    elif kind == "llama":
        # SentencePiece BPE as HF's llama tokenizers express it: spaces become
        # "▁", a "▁" is prepended, unknown bytes fall back to <0xNN> tokens.
        scores = list(meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens))
        if not merges:
            merges = _spm_merges(vocab, scores)
        unk_id = meta.get("tokenizer.ggml.unknown_token_id")
        unk = tokens[unk_id] if unk_id is not None and unk_id < len(tokens) else None
        tok = Tokenizer(
            models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
        )
        if meta.get("tokenizer.ggml.add_space_prefix", True):
            tok.normalizer = normalizers.Sequence(
                [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
            )
            strip = [decoders.Strip(" ", 1, 0)]
        else:
            tok.normalizer = normalizers.Replace(" ", "▁")
            strip = []
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *strip]
        )
    else:
        raise OptiqError(
            f"the GGUF tokenizer type {kind!r} is not supported (supported: gpt2-style BPE "
            "and llama SentencePiece); use the original Hugging Face model instead"
        )
    tok.add_tokens(_added_tokens(tokens, types))
    if kind == "llama" and _flag(meta, "tokenizer.ggml.add_bos_token", True):
        bos_id = meta.get("tokenizer.ggml.bos_token_id")
        if bos_id is not None:
            bos = tokens[bos_id]
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
            )
    return tok


def _flag(meta: dict[str, Any], key: str, default: bool) -> bool:
    value = meta.get(key)
    return default if value is None else bool(value)


def _token(meta: dict[str, Any], key: str) -> str | None:
    index = meta.get(key)
    tokens = meta["tokenizer.ggml.tokens"]
    return tokens[index] if index is not None and 0 <= index < len(tokens) else None


def write_tokenizer(tok, meta: dict[str, Any], folder: Path, context_length: int | None) -> None:
    """Write ``tok`` (from :func:`build_tokenizer`) and tokenizer_config.json (with the chat template)."""
    tok.save(str(folder / "tokenizer.json"))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": _token(meta, "tokenizer.ggml.bos_token_id"),
        "eos_token": _token(meta, "tokenizer.ggml.eos_token_id"),
        "unk_token": _token(meta, "tokenizer.ggml.unknown_token_id"),
        "pad_token": _token(meta, "tokenizer.ggml.padding_token_id"),
        "add_bos_token": _flag(meta, "tokenizer.ggml.add_bos_token", False),
        "add_eos_token": _flag(meta, "tokenizer.ggml.add_eos_token", False),
        "clean_up_tokenization_spaces": False,
    }
    if context_length:
        config["model_max_length"] = context_length
    template = meta.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
