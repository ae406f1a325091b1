"""Tiny random models of every GGUF family, written as GGUF the way llama.cpp's converter does.

Each source is an mlx-lm model class with random weights. The writer names
tensors with the `gguf` package's own TensorNameMap (what convert_hf_to_gguf
uses), applies the converter's forward transforms (llama's Q/K row permutation,
Gemma's +1 on norm weights), stores the matrices in a mix of tensor types and
returns the reference: the source's weights after that quantize/dequantize.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

import gguf
from tests.gguf_files import _K_SCALE_OFFSETS, llama_cpp_permute
from tests.tiny import CHATML_TEMPLATE, build_tokenizer

Q = gguf.GGMLQuantizationType

# Byte offsets of the float16 scale(s) in blocks of the types the gguf package can only read
# (llama.cpp's block_* structs); other bytes are random and blocks that decode badly are zeroed.
_SCALE_OFFSETS = {**_K_SCALE_OFFSETS, Q.IQ4_NL: (0,), Q.IQ4_XS: (0,), Q.IQ2_XXS: (0,), Q.IQ2_XS: (0,),
                  Q.IQ2_S: (0,), Q.IQ3_XXS: (0,), Q.IQ3_S: (0,), Q.IQ1_S: (0,)}
# NVFP4 keeps one unsigned E4M3 scale byte per 16 values in its first 4 bytes; small exponents keep them sane.
_BYTE_SCALES = {Q.NVFP4: 4}
_QUANTIZABLE = {Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.MXFP4, Q.TQ1_0, Q.TQ2_0}

_HIDDEN, _HEADS, _KV_HEADS, _HEAD_DIM, _FF = 256, 4, 2, 64, 512
_COMMON = {
    "hidden_size": _HIDDEN, "num_hidden_layers": 2, "intermediate_size": _FF,
    "num_attention_heads": _HEADS, "num_key_value_heads": _KV_HEADS, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "max_position_embeddings": 4096,
}
_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 256}

# GGUF arch -> (mlx-lm config beyond _COMMON, tensor types the matrices cycle through).
FAMILIES: dict[str, tuple[dict[str, Any], list[Any]]] = {
    "llama": ({"model_type": "llama", "tie_word_embeddings": False}, [Q.Q4_K, Q.Q6_K, Q.Q8_0, Q.Q5_0]),
    # Mistral Nemo-style: a llama whose head_dim is not hidden / heads.
    "mistral": ({"model_type": "llama", "head_dim": 32, "tie_word_embeddings": False}, [Q.Q6_K, Q.Q8_0]),
    "mixtral": ({"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2,
                 "intermediate_size": 256}, [Q.Q4_K, Q.Q5_1, Q.Q8_0]),
    "qwen2": ({"model_type": "qwen2", "tie_word_embeddings": True}, [Q.Q5_K, Q.Q4_0, Q.Q8_0]),
    "qwen3": ({"model_type": "qwen3", "head_dim": _HEAD_DIM, "tie_word_embeddings": False},
              [Q.Q6_K, Q.Q3_K, Q.BF16]),
    "qwen2moe": ({"model_type": "qwen2_moe", **_MOE, "shared_expert_intermediate_size": 512},
                 [Q.Q4_K, Q.Q8_0, Q.Q5_0, Q.F16]),
    "qwen3moe": ({"model_type": "qwen3_moe", **_MOE, "head_dim": _HEAD_DIM, "decoder_sparse_step": 1,
                  "mlp_only_layers": [], "norm_topk_prob": True, "tie_word_embeddings": True},
                 [Q.Q2_K, Q.Q6_K, Q.Q4_1]),
    "gemma": ({"model_type": "gemma", "head_dim": _HEAD_DIM}, [Q.Q4_K, Q.Q8_0, Q.Q6_K]),
    "gemma2": ({"model_type": "gemma2", "head_dim": _HEAD_DIM, "attn_logit_softcapping": 50.0,
                "final_logit_softcapping": 30.0, "query_pre_attn_scalar": _HEAD_DIM},
               [Q.Q5_K, Q.Q5_0, Q.Q6_K]),
    "gemma3": ({"model_type": "gemma3_text", "head_dim": _HEAD_DIM, "query_pre_attn_scalar": _HEAD_DIM,
                "sliding_window": 4, "sliding_window_pattern": 2, "rope_theta": 1000000.0,
                "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0}},
               [Q.Q4_K, Q.Q5_0, Q.Q6_K, Q.Q8_0]),
    "phi3": ({"model_type": "phi3", "partial_rotary_factor": 0.75, "max_position_embeddings": 8192,
              "original_max_position_embeddings": 4096, "tie_word_embeddings": False,
              "rope_scaling": {"type": "longrope", "long_factor": [1.0 + i / 8 for i in range(24)],
                               "short_factor": [1.0 + i / 64 for i in range(24)]}},
             [Q.IQ4_NL, Q.Q8_0, Q.Q4_K, Q.IQ4_XS]),
    "gpt-oss": ({"model_type": "gpt_oss", "head_dim": _HEAD_DIM, "num_local_experts": 4,
                 "num_experts_per_tok": 2, "intermediate_size": 256, "sliding_window": 4,
                 "layer_types": ["sliding_attention", "full_attention"],
                 "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096}},
                [Q.Q8_0, Q.MXFP4]),
}


# Families whose files carry a SentencePiece vocabulary; the others carry byte-level BPE.
SENTENCEPIECE = {"gemma", "mixtral"}
# The `tokenizer.ggml.pre` names real files of these families carry.
PRE_TOKENIZERS = {"llama": "llama-bpe", "mistral": "tekken", "qwen2": "qwen2", "qwen3": "qwen2",
                  "qwen2moe": "qwen2", "qwen3moe": "qwen2", "gpt-oss": "gpt-4o"}


# Test families that llama.cpp files call "llama".
GGUF_ARCH = {"mistral": "llama", "mixtral": "llama"}


def build_source(arch: str, path: Path, seed: int = 0) -> tuple[dict[str, Any], Any]:
    """A random mlx-lm model of GGUF family ``arch`` with a byte-level tokenizer at ``path``."""
    from mlx_lm.utils import _get_classes

    path.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(path, 384, CHATML_TEMPLATE)
    config = {**_COMMON, **FAMILIES[arch][0], "vocab_size": vocab}
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    if arch == "gemma3":
        model.sanitize({})  # tied, as Gemma 3 ships
    # Norms, biases and sinks start at constants; random values make every mapping mistake show.
    params = tree_flatten(model.parameters())
    model.load_weights([(k, v + 0.1 * mx.random.normal(v.shape) if v.ndim == 1 else v) for k, v in params])
    mx.eval(model.parameters())
    return config, model


def _gguf_name(tmap, name: str) -> str:
    module, _, suffix = name.rpartition(".")
    if ".switch_mlp." in name:  # mlx-lm's stacked experts; the converter stacks HF's per-expert ones
        layer, proj = name.split(".")[2], module.rpartition(".")[2].removesuffix("_proj")
        return f"blk.{layer}.ffn_{proj}_exps.{suffix}"
    if name.endswith(".sinks"):  # gpt-oss: the converter appends ".weight" to the sinks
        module, suffix = name, "weight"
    mapped = tmap.get_name(module)
    assert mapped is not None, name
    return f"{mapped}.{suffix}"


def _encode(values: np.ndarray, qtype, rng: np.random.Generator) -> tuple[np.ndarray, Any, np.ndarray]:
    """(payload, stored type, dequantized values) for ``values``; falls back where blocks don't fit."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if values.shape[-1] % block:
        qtype = Q.Q8_0 if values.shape[-1] % 32 == 0 else Q.F16
    if qtype in (Q.F32, Q.F16):
        payload = values.astype(np.float32 if qtype == Q.F32 else np.float16)
        return payload, qtype, payload.astype(np.float32)
    if qtype not in _QUANTIZABLE:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        data = rng.integers(0, 256, size=(values.size // block, size), dtype=np.uint8)
        for offset in _SCALE_OFFSETS.get(qtype, ()):
            scales = rng.uniform(1e-4, 4e-4, size=(len(data), 1)).astype(np.float16)
            data[:, offset:offset + 2] = scales.view(np.uint8)
        if qtype in _BYTE_SCALES:
            data[:, :_BYTE_SCALES[qtype]] = rng.integers(8, 40, size=(len(data), _BYTE_SCALES[qtype]))
        with np.errstate(invalid="ignore", over="ignore"):  # random scale bits may read as NaN/inf
            blocks = gguf.quants.dequantize(data, qtype)
        data[~np.isfinite(blocks).all(axis=1) | (np.abs(blocks) > 1).any(axis=1)] = 0  # a zero block reads 0
        payload = data.reshape(*values.shape[:-1], -1)
    else:
        payload = gguf.quants.quantize(values.astype(np.float32), qtype)
    decoded = gguf.quants.dequantize(payload, qtype).reshape(values.shape).astype(np.float32)
    return payload, qtype, decoded


def write_family_gguf(
    arch: str, config: dict[str, Any], model, tok_dir: Path, out: Path, *,
    spm: dict | None = None, chat_template: str | None = CHATML_TEMPLATE, qtypes: list | None = None, seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``model`` as llama.cpp would; return the reference weights (mlx-lm names, float32)."""
    rng = np.random.default_rng(seed)
    gguf_arch = GGUF_ARCH.get(arch, arch)
    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == gguf_arch)
    tmap = gguf.get_tensor_name_map(arch_enum, config["num_hidden_layers"])
    w = gguf.GGUFWriter(str(out), gguf_arch)
    _write_hparams(w, arch, config)
    _write_vocab(w, tok_dir, spm, chat_template, PRE_TOKENIZERS.get(arch, "default"), arch.startswith("gemma"))

    qtypes = qtypes or FAMILIES[arch][1]
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    reference, matrices = {}, 0
    for name, value in tree_flatten(model.parameters()):
        values = np.array(value.astype(mx.float32))
        target = _gguf_name(tmap, name)
        stored_values = values + 1 if arch.startswith("gemma") and name.endswith("norm.weight") else values
        if values.ndim == 1 or not name.endswith(".weight"):  # llama.cpp keeps biases in F32
            payload, qtype, decoded = stored_values.astype(np.float32), Q.F32, values
        else:
            qtype = Q.MXFP4 if arch == "gpt-oss" and values.ndim == 3 else qtypes[matrices % len(qtypes)]
            matrices += 1
            payload, qtype, decoded = _encode(stored_values, qtype, rng)
        reference[name] = decoded
        kind = target.split(".")[-2]
        if kind in heads and gguf_arch == "llama":  # llama.cpp permutes llama's Q/K rows only
            payload = llama_cpp_permute(payload, heads[kind])
        raw = None if qtype in (Q.F32, Q.F16) else qtype
        w.add_tensor(target, payload, raw_dtype=raw)
    if arch == "phi3":
        scaling = config["rope_scaling"]
        w.add_tensor("rope_factors_long.weight", np.array(scaling["long_factor"], dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(scaling["short_factor"], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return reference


def _write_hparams(w, arch: str, c: dict[str, Any]) -> None:
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_freq_base(c["rope_theta"])
    if "head_dim" in c:
        w.add_key_length(c["head_dim"])
        w.add_value_length(c["head_dim"])
    experts = c.get("num_experts") or c.get("num_local_experts")
    if experts:
        w.add_expert_count(experts)
        w.add_expert_used_count(c["num_experts_per_tok"])
    if "moe_intermediate_size" in c:
        w.add_expert_feed_forward_length(c["moe_intermediate_size"])
    if "shared_expert_intermediate_size" in c:
        w.add_expert_shared_feed_forward_length(c["shared_expert_intermediate_size"])
    if arch == "gemma2":
        w.add_attn_logit_softcapping(c["attn_logit_softcapping"])
        w.add_final_logit_softcapping(c["final_logit_softcapping"])
    if arch in ("gemma3", "gpt-oss"):
        w.add_sliding_window(c["sliding_window"])
    if arch == "gemma3":  # Gemma 3 4B+ scale the global layers' rope linearly
        w.add_sliding_window_pattern(c["sliding_window_pattern"])
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(c["rope_scaling"]["factor"])
    if arch == "gpt-oss":
        w.add_expert_feed_forward_length(c["intermediate_size"])
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(c["rope_scaling"]["factor"])
        w.add_rope_scaling_orig_ctx_len(c["rope_scaling"]["original_max_position_embeddings"])
    if arch == "phi3":
        w.add_rope_dimension_count(int(c["partial_rotary_factor"] * c["hidden_size"]) // c["num_attention_heads"])
        w.add_rope_scaling_orig_ctx_len(c["original_max_position_embeddings"])


def _write_vocab(w, tok_dir: Path, spm: dict | None, chat_template: str | None, pre: str, gemma: bool) -> None:
    if spm is not None:  # a SentencePiece vocabulary, as Gemma/llama2/Mistral files carry
        w.add_tokenizer_model("llama")
        w.add_token_list(spm["tokens"])
        w.add_token_scores(spm["scores"])
        w.add_token_types(spm["types"])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        if gemma:  # as the converter writes Gemma's: no "▁" before the text, an end-of-turn token apart from eos
            w.add_add_space_prefix(False)
            w.add_eot_token_id(len(spm["tokens"]) - 1)
    else:
        tok = json.loads((tok_dir / "tokenizer.json").read_text())
        vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
        added = {t["content"] for t in tok["added_tokens"]}
        tokens = [t for t, _ in vocab]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types([3 if t in added else 1 for t in tokens])
        w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
        w.add_eos_token_id(tokens.index("<|im_end|>"))
    if chat_template is not None:
        w.add_chat_template(chat_template)
