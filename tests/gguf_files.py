"""Write small GGUF files from tiny MLX llama models, the way llama.cpp's converter does.

The weights are quantized with the `gguf` package itself; for the k-quants,
which it can only read, random blocks with sane scales stand in. Each writer
returns the reference weights: what the file's tensors dequantize to, in
Hugging Face layout, so a test can compare the imported model against them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import gguf

Q = gguf.GGMLQuantizationType

LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}

# Byte offsets of the float16 super-block scales in each k-quant block (llama.cpp's
# block_q*_K structs); random bytes elsewhere are valid quants.
_K_SCALE_OFFSETS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    module, leaf = rest.rsplit(".", 1)
    return f"blk.{layer}.{LAYER_NAMES[module]}.{leaf}"


def llama_cpp_permute(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (works on float rows or quant bytes)."""
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _random_k_blocks(qtype, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for offset in _K_SCALE_OFFSETS[qtype]:
        scales = rng.uniform(2e-5, 1e-4, size=(rows, cols // block)).astype(np.float16)
        data[..., offset : offset + 2] = scales.view(np.uint8).reshape(rows, cols // block, 2)
    return data.reshape(rows, -1)


def encode(values: np.ndarray, qtype, rng: np.random.Generator) -> np.ndarray:
    """The GGUF payload of ``values`` (HF layout) stored as ``qtype``."""
    if qtype in _K_SCALE_OFFSETS:
        return _random_k_blocks(qtype, values.shape[0], values.shape[1], rng)
    return gguf.quants.quantize(values.astype(np.float32), qtype)


def decode(payload: np.ndarray, qtype, shape) -> np.ndarray:
    return gguf.quants.dequantize(payload, qtype).reshape(shape).astype(np.float32)


def write_llama_gguf(
    model_dir: Path,
    out: Path,
    qtype,
    *,
    arch: str = "llama",
    tokenizer_model: str = "gpt2",
    extra_tensor: tuple[str, np.ndarray] | None = None,
    spm: dict | None = None,
    seed: int = 0,
    sampling: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Write ``model_dir`` (a tiny MLX llama) as a GGUF whose 2-D weights are ``qtype``.

    Returns the reference weights (HF names, float32): what the file holds.
    """
    import mlx.core as mx

    rng = np.random.default_rng(seed)
    config = json.loads((model_dir / "config.json").read_text())
    weights = {k: np.array(v.astype(mx.float32)) for k, v in mx.load(str(model_dir / "model.safetensors")).items()}
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())

    w = gguf.GGUFWriter(str(out), arch)
    for key, value in (sampling or {}).items():  # llama.cpp's recommended sampler, general.sampling.*
        (w.add_int32 if isinstance(value, int) else w.add_float32)(f"general.sampling.{key}", value)
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(config["rope_theta"])
    if spm is not None:  # a SentencePiece ("llama") vocabulary instead of the model's byte-level BPE
        w.add_tokenizer_model("llama")
        w.add_token_list(spm["tokens"])
        w.add_token_scores(spm["scores"])
        w.add_token_types(spm["types"])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
    else:
        vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
        added = {t["content"]: t["id"] for t in tok["added_tokens"]}
        tokens = [t for t, _ in vocab]
        for content, i in added.items():
            if i >= len(tokens):
                tokens.append(content)
        w.add_tokenizer_model(tokenizer_model)
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types([3 if t in added else 1 for t in tokens])
        w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
        w.add_eos_token_id(tokens.index(tok_config["eos_token"]))
        w.add_pad_token_id(tokens.index(tok_config["pad_token"]))
    w.add_chat_template(tok_config["chat_template"])

    reference = {}
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    for name, values in weights.items():
        target = gguf_name(name)
        if values.ndim == 1 or qtype == Q.F32:
            payload, stored = values.astype(np.float32), Q.F32
            reference[name] = values.astype(np.float32)
        else:
            payload, stored = encode(values, qtype, rng), qtype
            reference[name] = decode(payload, qtype, values.shape)
        kind = target.split(".")[-2]
        if kind in heads and arch == "llama":  # llama.cpp permutes only llama's Q/K rows
            payload = llama_cpp_permute(payload, heads[kind])
        if stored in (Q.F32, Q.F16):
            w.add_tensor(target, payload)
        else:
            w.add_tensor(target, payload, raw_dtype=stored)
    if extra_tensor is not None:
        w.add_tensor(*extra_tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return reference


def spm_vocab(n_tokens: int):
    """A llama-style SentencePiece BPE vocabulary (with <0xNN> byte tokens), and the
    Hugging Face tokenizer that llama checkpoints ship for it, as the reference."""
    from tokenizers import SentencePieceBPETokenizer, Tokenizer, decoders, models, normalizers, processors

    from tests.tiny import CORPUS

    trained = SentencePieceBPETokenizer()
    trained.train_from_iterator(CORPUS, vocab_size=120, show_progress=False)
    merges = [tuple(m) for m in json.loads(trained.to_str())["model"]["merges"]]
    chars = sorted({c for m in merges for part in m for c in part} | set("".join(CORPUS).replace(" ", "▁")))
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + chars
    scores = [0.0] * 259 + [-1000.0 - i for i in range(len(chars))]
    for rank, (a, b) in enumerate(merges):
        if a + b not in tokens:
            tokens.append(a + b)
            scores.append(-float(rank))
    types = [2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259)
    assert len(tokens) <= n_tokens
    for i in range(n_tokens - len(tokens)):  # unused rows of the embedding
        tokens.append(f"<unused{i}>")
        scores.append(0.0)
        types.append(5)
    reference = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, unk_token="<unk>",
                                     byte_fallback=True, fuse_unk=True))
    reference.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    reference.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    reference.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return {"tokens": tokens, "scores": scores, "types": types}, reference
