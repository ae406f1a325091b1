"""Tiny random configs for every architecture in the installed mlx-lm (tests/test_quant_zoo.py).

One table of small values for the hyper-parameter names mlx-lm's ModelArgs use,
applied to whichever of them an architecture has (required or not: a default
sized for a real model would make a large one), plus per-architecture fixes.
Hidden 64, 2 layers, 4 heads of 16, vocabulary 512: a model builds in
milliseconds and every Linear is a multiple of the group size 64.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import mlx.core as mx

VOCAB = 512
SMALL: dict[str, Any] = {
    "hidden_size": 64, "d_model": 64, "n_embd": 64, "dim": 64, "model_dim": 64,
    "num_hidden_layers": 2, "n_layer": 2, "n_layers": 2, "num_layers": 2,
    "intermediate_size": 128, "ffn_dim": 128, "n_inner": 128, "moe_intermediate_size": 64,
    "shared_expert_intermediate_size": 128, "expert_intermediate_size": 64,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "num_heads": 4,
    "num_key_value_heads": 2, "n_kv_heads": 2, "num_kv_heads": 2, "multi_query_group_num": 2,
    "head_dim": 16, "vocab_size": VOCAB, "max_position_embeddings": 256, "n_positions": 256,
    "n_ctx": 256, "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5, "layer_norm_eps": 1e-5, "norm_eps": 1e-5, "layer_norm_epsilon": 1e-5,
    "num_experts": 4, "n_routed_experts": 4, "num_local_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_topk": 2, "n_shared_experts": 1, "num_shared_experts": 1,
    "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
    "kv_lora_rank": 32, "q_lora_rank": 32, "qk_rope_head_dim": 16, "qk_nope_head_dim": 16,
    "v_head_dim": 16, "sliding_window": 8, "window_size": 8, "attention_window_size": 8,
    "tie_word_embeddings": False, "sliding_window_pattern": 2,
    "layer_types": ["sliding_attention", "full_attention"], "norm_topk_prob": True,
    "routed_scaling_factor": 1.0, "partial_rotary_factor": 1.0, "rotary_pct": 1.0,
    "rotary_emb_base": 10000.0, "hidden_act": "silu", "decoder_sparse_step": 1,
    "mlp_only_layers": [], "shared_intermediate_size": 128, "rotary_dim": 16,
}


# Required fields the table does not name, by their annotation: switches off, factors 1.
BY_TYPE: dict[str, Any] = {"bool": False, "float": 1.0, "Optional[bool]": False,
                           "Optional[float]": None, "Optional[int]": None}


def architectures() -> list[str]:
    """Every model module of the installed mlx-lm that defines a Model."""
    import mlx_lm.models as models

    names = []
    for info in pkgutil.iter_modules(models.__path__):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # olmo prints, then exits
                mod = importlib.import_module(f"mlx_lm.models.{info.name}")
        except BaseException:  # noqa: BLE001 - a module needing an optional package exits
            names.append(info.name)
            continue
        if hasattr(mod, "Model") and hasattr(mod, "ModelArgs"):
            names.append(info.name)
    return sorted(names)


def _small(args_class: type) -> dict[str, Any]:
    """The table's values for the fields of ``args_class``, and its required switches."""
    fields = {f.name: f for f in dataclasses.fields(args_class)}
    cfg = {k: v for k, v in SMALL.items() if k in fields}
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        kind = kind.replace("typing.", "")
        if required and name not in cfg and kind in BY_TYPE:
            cfg[name] = BY_TYPE[kind]
    return cfg


# Where a wrapper's text model keeps its arguments class (ModelArgs.text_config).
TEXT_ARGS = {"qwen3_5": "qwen3_5.TextModelArgs", "qwen3_5_moe": "qwen3_5.TextModelArgs",
             "gemma4": "gemma4_text.ModelArgs", "kimi_k3": "kimi_k3.TextArgs"}


def tiny_config(arch: str) -> dict[str, Any]:
    mod = importlib.import_module(f"mlx_lm.models.{arch}")
    cfg = _small(mod.ModelArgs)
    if arch in TEXT_ARGS:
        module, _, name = TEXT_ARGS[arch].rpartition(".")
        text_args = getattr(importlib.import_module(f"mlx_lm.models.{module}"), name)
        cfg["text_config"] = {**_small(text_args), **FIXES.get(f"{arch}.text", {})}
    cfg["model_type"] = arch
    cfg.update(FIXES.get(arch, {}))
    return cfg


# Per-architecture values the table cannot guess (lists sized by the layer count, ...).
# Multipliers are given real-looking values: they are what a re-implemented forward misses.
FIXES: dict[str, dict[str, Any]] = {
    "granite": {"embedding_multiplier": 12.0, "logits_scaling": 8.0, "attention_multiplier": 0.0625,
                "residual_multiplier": 0.22},
    "granitemoe": {"embedding_multiplier": 12.0, "logits_scaling": 8.0,
                   "attention_multiplier": 0.0625, "residual_multiplier": 0.22},
    "minicpm": {"scale_emb": 12.0, "dim_model_base": 32, "scale_depth": 1.4},
    "gemma3_text": {"query_pre_attn_scalar": 16, "final_logit_softcapping": 30.0},
    "gptj": {"rotary_dim": 8},
    "phixtral": {"rotary_dim": 8},
    "plamo": {"num_key_value_heads": 2, "n_shared_head": 2},
    # Its defaults make the mamba mixer 64 x 128 = 8,192 wide (a 90-s compensation here).
    "plamo2": {"mamba_num_heads": 4, "hidden_size_per_head": 16, "mamba_d_state": 8},
    "exaone4": {"sliding_window_pattern": "LG", "rope_scaling": None},
    "mamba": {"state_size": 8, "conv_kernel": 4, "time_step_rank": 8},
    "lfm2": {"conv_L_cache": 3, "block_dim": 64, "block_multiple_of": 64, "block_ff_dim": 128,
             "block_auto_adjust_ff_dim": False, "full_attn_idxs": [1], "layer_types": None},
    "qwen3_next": {"linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_key_head_dim": 16,
                   "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4,
                   "full_attention_interval": 2},
    "recurrent_gemma": {"conv1d_width": 4, "attention_window_size": 8,
                        "block_types": ["recurrent", "attention"], "lru_width": 64},
    "glm4_moe": {"rope_scaling": None},
    "llama4_text": {"intermediate_size_mlp": 128, "no_rope_layers": [1, 0]},
    "mamba2": {"state_size": 8, "conv_kernel": 4, "n_groups": 1, "time_step_limit": [0.0, 1e9],
               "time_step_rank": 8, "num_heads": 8, "head_dim": 16},
    "lfm2_moe": {"num_dense_layers": 1, "conv_L_cache": 3, "layer_types": None,
                 "full_attn_idxs": [1]},
    "afm7": {"hidden_dim": 64, "num_kv_reuse_layers": 1, "num_layers": 3,
             "hidden_dim_scale_factor": 2.0},
    "baichuan_m1": {"sliding_window_layers": [0], "conv_window": 2},
    "hunyuan": {"num_shared_expert": 1, "use_cla": False, "cla_share_factor": 2,
                "use_mixed_mlp_moe": True, "use_qk_norm": True,
                "rope_scaling": {"alpha": 1.0, "factor": 1.0, "type": "dynamic"}},
    "lille-130m": {"block_size": 256},
    "phi3small": {"dense_attention_every_n_layers": 2, "ff_intermediate_size": 128,
                  "gegelu_limit": 20.0, "blocksparse_block_size": 32,
                  "blocksparse_num_local_blocks": 2, "blocksparse_vert_stride": 2,
                  # Its head writes -inf at fixed ids up to 100351 (out of bounds: a crash).
                  "vocab_size": 100352},
    "exaone_moe": {"is_moe_layer": [False, True]},
    "step3p5": {"num_attention_groups": 2, "moe_num_experts": 4, "moe_top_k": 2,
                "moe_intermediate_size": 64, "share_expert_dim": 64, "moe_layers_enum": "1",
                "layer_types": ["sliding_attention", "full_attention"]},
    "dbrx": {"ffn_config": {"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2},
             "attn_config": {"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0}},
    "jamba": {"attn_layer_offset": 1, "attn_layer_period": 2, "expert_layer_offset": 1,
              "expert_layer_period": 2, "mamba_d_conv": 4, "mamba_d_state": 8,
              "mamba_expand": 2},
    "nemotron_h": {"mamba_num_heads": 8, "mamba_head_dim": 16, "ssm_state_size": 8,
                   "conv_kernel": 4, "n_groups": 1, "time_step_limit": [0.0, 1e9],
                   "layers_block_type": ["linear_attention", "full_attention", "mlp"],
                   "layer_types": ["linear_attention", "full_attention", "mlp"]},
    "openelm": {"num_transformer_layers": 2, "ffn_dim_divisor": 64, "num_query_heads": [4, 4],
                "num_kv_heads": [2, 2], "ffn_multipliers": [2.0, 2.0]},
    "rwkv7": {"a_low_rank_dim": 16, "v_low_rank_dim": 16, "gate_low_rank_dim": 16,
              "decay_low_rank_dim": 16},
    "granitemoehybrid": {"embedding_multiplier": 12.0, "logits_scaling": 8.0,
                         "attention_multiplier": 0.0625, "residual_multiplier": 0.22,
                         "layer_types": ["mamba", "attention"], "mamba_n_heads": 8,
                         "mamba_d_head": 16, "mamba_d_state": 8, "mamba_d_conv": 4,
                         "mamba_n_groups": 1, "mamba_proj_bias": False, "mamba_conv_bias": True},
    "mellum": {"rope_parameters": {"sliding_attention": {"rope_theta": 10000.0},
                                   "full_attention": {"rope_theta": 10000.0}}},
    "gemma4_text": {"num_kv_shared_layers": 0, "global_head_dim": 16,
                    "vocab_size_per_layer_input": VOCAB, "hidden_size_per_layer_input": 16},
    "gemma4.text": {"num_kv_shared_layers": 0, "global_head_dim": 16,
                    "vocab_size_per_layer_input": VOCAB, "hidden_size_per_layer_input": 16},
    "qwen3_5.text": {"linear_num_value_heads": 4, "linear_num_key_heads": 2,
                     "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                     "linear_conv_kernel_dim": 4, "full_attention_interval": 2},
    "qwen3_5_moe.text": {"linear_num_value_heads": 4, "linear_num_key_heads": 2,
                         "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                         "linear_conv_kernel_dim": 4, "full_attention_interval": 2},
    "deepseek_v2": {"rope_scaling": {"factor": 1.0}},
    "minicpm3": {"scale_emb": 12.0, "dim_model_base": 32, "scale_depth": 1.4,
                 "rope_scaling": {"original_max_position_embeddings": 256}},
    "ministral3": {"rope_parameters": {"rope_theta": 10000.0, "rope_type": "default",
                                       "llama_4_scaling_beta": 0.1,
                                       "original_max_position_embeddings": 256}},
    "mistral4": {"rope_parameters": {"rope_theta": 10000.0, "rope_type": "default",
                                     "factor": 1.0, "llama_4_scaling_beta": 0.1,
                                     "original_max_position_embeddings": 256}},
    "qwen": {"kv_channels": 16, "intermediate_size": 256},
    "bailing_hybrid": {"layer_group_size": 2, "group_norm_size": 1},
    "bailing_moe_linear": {"layer_group_size": 2, "group_norm_size": 1},
    "olmo_hybrid": {"linear_num_key_heads": 2, "linear_num_value_heads": 4,
                    "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                    "linear_conv_kernel_dim": 4, "layer_types": ["linear_attention",
                                                                  "full_attention"]},
    "spark2_5": {"rope_parameters": {"sliding_attention": {"rope_theta": 10000.0},
                                     "full_attention": {"rope_theta": 10000.0}},
                 "hidden_act": "gelu"},
    "longcat_flash": {"attention_method": "MLA", "zero_expert_type": "identity",
                      "ffn_hidden_size": 128, "expert_ffn_hidden_size": 64,
                      "zero_expert_num": 1, "mla_scale_q_lora": True, "mla_scale_kv_lora": True},
    "longcat_flash_ngram": {"ffn_hidden_size": 128, "expert_ffn_hidden_size": 64,
                            "zero_expert_num": 1, "ngram_vocab_size_ratio": 2,
                            "mla_scale_q_lora": True, "mla_scale_kv_lora": True},
    "kimi_linear": {"linear_attn_config": {"num_heads": 4, "head_dim": 16, "kda_layers": [1],
                                           "short_conv_kernel_size": 4},
                    "model_max_length": 256, "num_experts_per_token": 2},
    "mimo_v2_flash": {"hybrid_layer_pattern": [1, 0], "moe_layer_freq": [0, 1],
                      "sliding_window_size": 8, "topk_method": "noaux_tc",
                      "scoring_func": "sigmoid", "swa_num_attention_heads": 4,
                      "swa_num_key_value_heads": 2, "swa_head_dim": 16, "swa_v_head_dim": 16,
                      "layernorm_epsilon": 1e-5, "swa_rope_theta": 10000.0,
                      "partial_rotary_factor": 1, "add_swa_attention_sink_bias": True},
    "kimi_k3.text": {"hidden_act": "situ", "num_experts_per_token": 2,
                     "linear_attn_config": {"num_heads": 4, "head_dim": 16, "kda_layers": [1],
                                            "short_conv_kernel_size": 4}},
    "glm_moe_dsa": {"index_head_dim": 32, "index_n_heads": 2, "index_topk": 8,
                    "topk_method": "noaux_tc", "scoring_func": "sigmoid", "moe_layer_freq": 1,
                    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}},
    "nemotron-nas": {"block_configs": [
        {"attention": {"n_heads_in_group": 2}, "ffn": {"ffn_mult": 1.5}},
        {"attention": {"no_op": True}, "ffn": {"ffn_mult": 1.5}}]},
}


def build(arch: str, seed: int = 0):
    """(model, config) of ``arch`` with random float32 weights."""
    from mlx_lm.utils import _get_classes

    cfg = tiny_config(arch)
    model_class, args_class = _get_classes(cfg)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(cfg))
    mx.eval(model.parameters())
    return model, cfg


def write(arch: str, path: Path, seed: int = 0) -> Path:
    """A model folder of ``arch`` that stock mlx_lm.load loads (tiny tokenizer included)."""
    from mlx.utils import tree_flatten

    from tests.tiny import CHATML_TEMPLATE, build_tokenizer

    model, cfg = build(arch, seed)
    model.set_dtype(mx.float16)  # as checkpoints are: 16-bit scales and norms fit a 5.0 budget
    path.mkdir(parents=True, exist_ok=True)
    build_tokenizer(path, VOCAB - 64, CHATML_TEMPLATE)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path
