"""How each GGUF architecture maps onto an mlx-lm model: config, tensor names, transforms.

llama.cpp's converter (convert_hf_to_gguf.py) renames every tensor, stores
hyper-parameters under ``<arch>.*`` keys and changes a few tensors on the way:
it permutes the Q/K rows of llama-family models for its interleaved rotary
layout, and adds 1 to Gemma's RMSNorm weights (HF Gemma computes ``x * (1 + w)``,
llama.cpp ``x * w``). This module holds, per family, what undoes that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from optiq_tui.progress import OptiqError

_ATTENTION = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_DENSE = {
    **_ATTENTION,
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 2/3 norm both sides of attention and MLP; llama.cpp's ffn_norm is the pre-MLP one.
_GEMMA2 = {
    **_DENSE,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# Phi-3 keeps its fused projections; llama.cpp's ffn_up is HF's gate_up_proj.
_PHI3 = {
    "attn_norm": "input_layernorm",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj",
}


def _experts(router: str, experts: str) -> dict[str, str]:
    """Stacked expert tensors ([experts, out, in]) are exactly SwitchGLU's weights."""
    return {
        "ffn_gate_inp": router,
        "ffn_gate_exps": f"{experts}.gate_proj",
        "ffn_up_exps": f"{experts}.up_proj",
        "ffn_down_exps": f"{experts}.down_proj",
    }


_QWEN_MOE = {**_ATTENTION, "ffn_norm": "post_attention_layernorm", **_experts("mlp.gate", "mlp.switch_mlp")}
_QWEN2_MOE = {
    **_QWEN_MOE,
    "ffn_gate_inp_shexp": "mlp.shared_expert_gate",
    "ffn_gate_shexp": "mlp.shared_expert.gate_proj",
    "ffn_up_shexp": "mlp.shared_expert.up_proj",
    "ffn_down_shexp": "mlp.shared_expert.down_proj",
}
_MIXTRAL = {
    **_ATTENTION,
    "ffn_norm": "post_attention_layernorm",
    **_experts("block_sparse_moe.gate", "block_sparse_moe.switch_mlp"),
}
_GPT_OSS = {
    **_ATTENTION,
    "attn_sinks": "self_attn.sinks",
    "post_attention_norm": "post_attention_layernorm",
    **_experts("mlp.router", "mlp.experts"),
}
# Parameters that are a module's attribute, not a sub-module's weight (no ".weight" suffix in mlx-lm).
BARE_PARAMETERS = {"self_attn.sinks"}

GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Folded into the config instead of written as weights.
CONFIG_TENSORS = {"rope_freqs", "rope_factors_long", "rope_factors_short"}


class Hparams:
    """The GGUF metadata of one architecture, read by key without the ``<arch>.`` prefix."""

    def __init__(self, arch: str, meta: dict[str, Any], tensors: dict[str, Any]):
        self.arch, self.meta, self.tensors = arch, meta, tensors

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(f"{self.arch}.{key}", default)

    def need(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise OptiqError(f"the GGUF metadata lacks {self.arch}.{key}, a hyper-parameter the model needs")
        return value

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self.tensors[name].data, dtype=np.float32)


@dataclass(frozen=True)
class Family:
    model_type: str
    architecture: str  # the HF class name written into config.json
    layers: dict[str, str]
    extra_config: Callable[[Hparams, dict[str, Any]], None] = lambda h, c: None
    permute_qk: bool = False
    norm_shift: float = 0.0
    dtype: str | None = None  # forced storage dtype (bfloat16 where float16 activations overflow)
    lm_head: str = "optional"  # "optional" (tie flag), "none" (always tied), "required"


def _f32(value: Any) -> float:
    """A float32 metadata value as the short decimal it was written from (1e-05, not 9.99e-06)."""
    return float(str(np.float32(value)))


def _head_dim(h: Hparams, config: dict[str, Any]) -> int:
    return int(h.get("attention.key_length") or config["hidden_size"] // config["num_attention_heads"])


def _qwen3(h: Hparams, c: dict[str, Any]) -> None:
    c["head_dim"] = _head_dim(h, c)


def _moe(h: Hparams, c: dict[str, Any], experts_key: str = "num_experts") -> None:
    c[experts_key] = int(h.need("expert_count"))
    c["num_experts_per_tok"] = int(h.need("expert_used_count"))
    c["moe_intermediate_size"] = int(h.get("expert_feed_forward_length") or c["intermediate_size"])


def _qwen2_moe(h: Hparams, c: dict[str, Any]) -> None:
    _moe(h, c)
    c["shared_expert_intermediate_size"] = int(h.need("expert_shared_feed_forward_length"))


def _qwen3_moe(h: Hparams, c: dict[str, Any]) -> None:
    _moe(h, c)
    _qwen3(h, c)
    # llama.cpp's qwen3moe always renormalises the top-k weights, as Qwen3-MoE's HF config says.
    c.update(decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True)


def _mixtral(h: Hparams, c: dict[str, Any]) -> None:
    c["num_local_experts"] = int(h.need("expert_count"))
    c["num_experts_per_tok"] = int(h.need("expert_used_count"))


def _attention_scalar(h: Hparams, c: dict[str, Any], big_layers: int) -> int:
    # llama.cpp scales Gemma's queries by head_dim, except the 27B sizes, which use hidden/heads.
    if c["num_hidden_layers"] == big_layers:
        return c["hidden_size"] // c["num_attention_heads"]
    return c["head_dim"]


def _gemma(h: Hparams, c: dict[str, Any]) -> None:
    c["head_dim"] = _head_dim(h, c)


def _gemma2(h: Hparams, c: dict[str, Any]) -> None:
    _gemma(h, c)
    c["attn_logit_softcapping"] = _f32(h.get("attn_logit_softcapping", 50.0))
    c["final_logit_softcapping"] = _f32(h.get("final_logit_softcapping", 30.0))
    c["query_pre_attn_scalar"] = _attention_scalar(h, c, big_layers=46)


def _gemma3(h: Hparams, c: dict[str, Any]) -> None:
    _gemma(h, c)
    c["query_pre_attn_scalar"] = _attention_scalar(h, c, big_layers=62)
    window = h.get("attention.sliding_window")
    pattern = h.get("attention.sliding_window_pattern")
    # llama.cpp's gemma3 uses 5 local layers then 1 global unless the file says otherwise.
    c["sliding_window_pattern"] = int(pattern) if isinstance(pattern, (int, np.integer)) else (6 if window else 1)
    c["sliding_window"] = int(window or c.get("max_position_embeddings", 32768))
    c["rope_local_base_freq"] = _f32(h.get("rope.freq_base_swa", 10000.0))


def _phi3(h: Hparams, c: dict[str, Any]) -> None:
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    c["partial_rotary_factor"] = int(h.get("rope.dimension_count", head_dim)) / head_dim
    if (original := h.get("rope.scaling.original_context_length")) is not None:
        c["original_max_position_embeddings"] = int(original)
    if "rope_factors_long.weight" in h.tensors:
        c["rope_scaling"] = {
            "type": "longrope",
            "long_factor": [float(x) for x in h.array("rope_factors_long.weight")],
            "short_factor": [float(x) for x in h.array("rope_factors_short.weight")],
        }


def _gpt_oss(h: Hparams, c: dict[str, Any]) -> None:
    c["head_dim"] = _head_dim(h, c)
    c["num_local_experts"] = int(h.need("expert_count"))
    c["num_experts_per_tok"] = int(h.need("expert_used_count"))
    c["intermediate_size"] = int(h.get("expert_feed_forward_length") or c["intermediate_size"])
    c["sliding_window"] = int(h.need("attention.sliding_window"))
    # llama.cpp's gpt-oss alternates sliding (even layers) and full attention, as HF's layer_types do.
    c["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention"
                        for i in range(c["num_hidden_layers"])]
    # Harmony ends a reply with <|return|> or <|call|>; <|end|> only closes a channel, so it must not stop.
    tokens = h.meta.get("tokenizer.ggml.tokens") or []
    stops = [tokens.index(t) for t in ("<|return|>", "<|endoftext|>", "<|call|>") if t in tokens]
    if stops:
        c["eos_token_id"] = stops


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "LlamaForCausalLM", _DENSE, permute_qk=True),
    "qwen2": Family("qwen2", "Qwen2ForCausalLM", _DENSE),
    "qwen3": Family("qwen3", "Qwen3ForCausalLM", _DENSE, _qwen3),
    "qwen2moe": Family("qwen2_moe", "Qwen2MoeForCausalLM", _QWEN2_MOE, _qwen2_moe, lm_head="required"),
    "qwen3moe": Family("qwen3_moe", "Qwen3MoeForCausalLM", _QWEN_MOE, _qwen3_moe),
    "gemma": Family("gemma", "GemmaForCausalLM", _DENSE, _gemma, norm_shift=1.0, dtype="bfloat16", lm_head="none"),
    "gemma2": Family("gemma2", "Gemma2ForCausalLM", _GEMMA2, _gemma2, norm_shift=1.0, dtype="bfloat16",
                     lm_head="none"),
    "gemma3": Family("gemma3_text", "Gemma3ForCausalLM", _GEMMA2, _gemma3, norm_shift=1.0, dtype="bfloat16"),
    "phi3": Family("phi3", "Phi3ForCausalLM", _PHI3, _phi3),
    "gpt-oss": Family("gpt_oss", "GptOssForCausalLM", _GPT_OSS, _gpt_oss, dtype="bfloat16", lm_head="required"),
}
# Mixtral GGUFs say "llama" and carry expert tensors; Mistral dense GGUFs are plain "llama".
MIXTRAL = Family("mixtral", "MixtralForCausalLM", _MIXTRAL, _mixtral, permute_qk=True)
SUPPORTED = "llama (and Mistral, Mixtral), qwen2, qwen2moe, qwen3, qwen3moe, gemma, gemma2, gemma3, phi3, gpt-oss"


def family_of(arch: str | None, tensors: dict[str, Any], file_name: str) -> Family:
    """The family for GGUF architecture ``arch``; a one-line OptiqError naming it if unsupported."""
    if arch is None:
        raise OptiqError(f"{file_name} does not say its architecture (general.architecture); "
                         f"GGUF import supports {SUPPORTED}")
    if arch not in FAMILIES:
        raise OptiqError(f"{file_name} is a {arch!r} model; GGUF import supports {SUPPORTED}")
    if arch == "llama" and "blk.0.ffn_gate_inp.weight" in tensors:
        return MIXTRAL
    return FAMILIES[arch]


def model_config(family: Family, h: Hparams, meta: dict[str, Any]) -> dict[str, Any]:
    """The mlx-lm config.json for the GGUF metadata ``meta`` of one family."""
    tensors = h.tensors
    heads = int(h.need("attention.head_count"))
    config: dict[str, Any] = {
        "model_type": family.model_type,
        "architectures": [family.architecture],
        "hidden_size": int(h.need("embedding_length")),
        "num_hidden_layers": int(h.need("block_count")),
        "intermediate_size": int(h.get("feed_forward_length") or h.get("expert_feed_forward_length") or 0),
        "num_attention_heads": heads,
        "num_key_value_heads": int(h.get("attention.head_count_kv", heads)),
        "rms_norm_eps": _f32(h.get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": _f32(h.get("rope.freq_base", 10000.0)),
        "vocab_size": int(tensors["token_embd.weight"].shape[-1]),
    }
    # Some llama-family fine-tunes (and every qwen2) carry q/k/v biases.
    config["attention_bias"] = "blk.0.attn_q.bias" in tensors
    if family.lm_head == "optional":
        config["tie_word_embeddings"] = "output.weight" not in tensors
    if (ctx := h.get("context_length")) is not None:
        config["max_position_embeddings"] = int(ctx)
    if (head_dim := h.get("attention.key_length")) is not None:
        config["head_dim"] = int(head_dim)  # Mistral Nemo/Small: not hidden / heads
    if (scaling := _rope_scaling(h)) is not None:
        config["rope_scaling"] = scaling
    if meta.get("tokenizer.ggml.bos_token_id") is not None:
        config["bos_token_id"] = int(meta["tokenizer.ggml.bos_token_id"])
    # Chat models end a turn with their end-of-turn token (Gemma's <end_of_turn>, Phi-3's <|end|>),
    # which llama.cpp keeps apart from eos; generation must stop at either.
    stops = [int(meta[f"tokenizer.ggml.{k}_token_id"]) for k in ("eos", "eot", "eom")
             if meta.get(f"tokenizer.ggml.{k}_token_id") is not None]
    stops = list(dict.fromkeys(stops))
    if stops:
        config["eos_token_id"] = stops[0] if len(stops) == 1 else stops
    family.extra_config(h, config)
    if "rope_freqs.weight" in tensors:
        config["rope_scaling"] = _llama3_rope_scaling(h.array("rope_freqs.weight"), config)
    return config


def _rope_scaling(h: Hparams) -> dict[str, Any] | None:
    kind, factor = h.get("rope.scaling.type"), h.get("rope.scaling.factor")
    if not factor or kind not in ("linear", "yarn"):
        return None
    if kind == "linear":  # mlx-lm's qwen2_moe reads "type", HF's configs say "rope_type"
        return {"type": "linear", "rope_type": "linear", "factor": _f32(factor)}
    scaling: dict[str, Any] = {"rope_type": "yarn", "factor": _f32(factor)}
    for key, name in (("original_max_position_embeddings", "rope.scaling.original_context_length"),
                      ("beta_fast", "rope.scaling.yarn_beta_fast"), ("beta_slow", "rope.scaling.yarn_beta_slow")):
        if (value := h.get(name)) is not None:
            scaling[key] = _f32(value)
    if "original_max_position_embeddings" in scaling:
        scaling["original_max_position_embeddings"] = int(scaling["original_max_position_embeddings"])
    return scaling


def _llama3_rope_scaling(freqs: np.ndarray, config: dict[str, Any]) -> dict[str, Any]:
    """Recover Llama 3.1-style rope scaling from the `rope_freqs` tensor llama.cpp stores.

    llama.cpp bakes the per-frequency factors into a tensor; mlx-lm wants the
    parameters. Llama 3.x uses low/high frequency factors 1 and 4, so the
    factor is the largest entry and the original context is found by matching.
    """
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    inv = 1.0 / (config["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim))
    factor = float(freqs.max())
    for original in (8192, 4096, 16384, 2048, 32768):
        low_wavelen, high_wavelen = original / 1.0, original / 4.0
        expected = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                expected.append(1.0)
            elif wavelen > low_wavelen:
                expected.append(factor)
            else:
                smooth = (original / wavelen - 1.0) / 3.0
                expected.append(1 / ((1 - smooth) / factor + smooth))
        if np.allclose(expected, freqs, rtol=1e-3):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": original}
    raise OptiqError("the GGUF file uses a rope frequency scaling this importer does not recognise")
