"""GGUF round trips for every supported family: write as llama.cpp would, import, compare logits."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from optiq_tui.library.gguf_import import PROVENANCE_FILE, import_gguf
from optiq_tui.progress import Log, OptiqError
from tests.gguf_families import FAMILIES, GGUF_ARCH, PRE_TOKENIZERS, SENTENCEPIECE, Q, build_source, write_family_gguf
from tests.gguf_files import spm_vocab

PROMPT_IDS = [5, 17, 42, 99, 7, 250, 3, 64, 12, 200]


def _logits(model) -> np.ndarray:
    model.set_dtype(mx.float32)  # MLX's CPU expert kernels (gather_mm) want float32
    return np.array(model(mx.array([PROMPT_IDS]))[0])


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_round_trip(arch, tmp_path):
    """The imported folder loads in stock mlx_lm.load and gives the source's logits.

    The source is the same weights after the file's quantize/dequantize, stored in
    the import's dtype; both run in float32, so only float rounding may differ.
    """
    from mlx_lm import load

    config, source = build_source(arch, tmp_path / "src")
    spm, spm_reference = spm_vocab(config["vocab_size"]) if arch in SENTENCEPIECE else (None, None)
    base = arch == "gemma"  # stands for a base model: no chat template in the file
    kwargs = {"chat_template": None} if base else {}
    reference = write_family_gguf(arch, config, source, tmp_path / "src", tmp_path / "m.gguf", spm=spm, **kwargs)
    logs: list[str] = []
    info = import_gguf(tmp_path / "m.gguf", arch,
                       progress=lambda e: logs.append(e.message) if isinstance(e, Log) else None)

    imported, tokenizer = load(str(info.path))
    assert info.model_type == config["model_type"]
    dtype = json.loads((info.path / "config.json").read_text())["torch_dtype"]
    want_dtype = {"float16": mx.float16, "bfloat16": mx.bfloat16}[dtype]
    source.load_weights([(k, mx.array(v).astype(want_dtype)) for k, v in reference.items()])
    got, want = _logits(imported), _logits(source)
    diff = float(np.abs(got - want).max())
    print(f"\n{arch}: max |logit diff| {diff:.2e} (logit scale {np.abs(want).max():.2f}, {dtype})")
    assert diff <= 1e-4 * max(1.0, float(np.abs(want).max())), diff

    provenance = json.loads((info.path / PROVENANCE_FILE).read_text())
    assert provenance["architecture"] == GGUF_ARCH.get(arch, arch)
    assert len(provenance["gguf_types"]) >= 2
    if base:
        assert info.chat_format == "none"
        assert any("no chat template" in line for line in logs)
        _assert_details_show_base_model_note(info)
        config = json.loads((info.path / "config.json").read_text())
        assert config["eos_token_id"] == [2, len(spm["tokens"]) - 1]  # eos, then the file's eot
        pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("Paris is"))
        assert pieces[0] == "<s>" and not pieces[1].startswith("▁") and "▁is" in pieces[1:]
        return
    assert info.chat_format == ("harmony" if arch == "gpt-oss" else "template")
    from tokenizers import Tokenizer

    text = "Paris is the capital of France. def add(a, b): return"
    got_tok = Tokenizer.from_file(str(info.path / "tokenizer.json"))
    if spm is not None:  # llama2/Mistral-style SentencePiece: "▁" prefix, <0xNN> byte fallback
        assert got_tok.encode(text + " déjà").ids == spm_reference.encode(text + " déjà").ids
        return
    want_tok = Tokenizer.from_file(str(tmp_path / "src" / "tokenizer.json"))
    assert got_tok.encode(text).ids == want_tok.encode(text).ids
    # The file's pre-tokenizer name picks the split: Qwen2 and Tekken cut numbers into single digits.
    digits = len(got_tok.pre_tokenizer.pre_tokenize_str("1234"))
    assert digits == {"qwen2": 4, "tekken": 4, "llama-bpe": 2, "gpt-4o": 2}.get(PRE_TOKENIZERS.get(arch), 1)


def _assert_details_show_base_model_note(info) -> None:
    from rich.console import Console

    from optiq_tui.ui.widgets.model_details import describe

    console = Console(width=120)
    with console.capture() as captured:
        console.print(describe(info))
    assert "none (base model: no chat template, plain completion)" in captured.get()


def test_gemma_norms_come_back_without_the_plus_one(tmp_path):
    """llama.cpp stores Gemma's norm weights as 1 + w; the import gives mlx-lm w again."""
    config, source = build_source("gemma2", tmp_path / "src")
    reference = write_family_gguf("gemma2", config, source, tmp_path / "src", tmp_path / "g.gguf")
    info = import_gguf(tmp_path / "g.gguf")
    weights = mx.load(str(info.path / "model.safetensors"))
    for name in ("model.norm.weight", "model.layers.1.post_feedforward_layernorm.weight"):
        got = np.array(weights[name].astype(mx.float32))
        np.testing.assert_allclose(got, reference[name], atol=1e-2)


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(OptiqError) as err:
        import_gguf(tmp_path / "m.gguf")
    message = str(err.value)
    assert "'mamba'" in message and "gemma3" in message and "gpt-oss" in message and "\n" not in message


def test_file_that_does_not_fit_the_model_is_refused_before_writing(tmp_path):
    """A tensor the family's mlx-lm model has no place for stops the import with one line."""
    from optiq_tui.settings import paths

    config, source = build_source("qwen3", tmp_path / "src")
    source.model.layers.pop()  # a file that says 2 layers but holds 1
    write_family_gguf("qwen3", config, source, tmp_path / "src", tmp_path / "q.gguf")
    with pytest.raises(OptiqError, match="does not fit mlx-lm's qwen3 model"):
        import_gguf(tmp_path / "q.gguf")
    assert list(paths().models.iterdir()) == [] and list(paths().staging.iterdir()) == []



def test_gpt_oss_keeps_its_mxfp4_experts_bit_for_bit(tmp_path):
    """--keep-quantized turns GGUF MXFP4 experts into MLX mxfp4 weights that dequantize identically."""
    from mlx_lm import load

    config, source = build_source("gpt-oss", tmp_path / "src")
    reference = write_family_gguf("gpt-oss", config, source, tmp_path / "src", tmp_path / "m.gguf")
    info = import_gguf(tmp_path / "m.gguf", keep_quantized=True)

    quant = json.loads((info.path / "config.json").read_text())["quantization"]
    expert = "model.layers.1.mlp.experts.down_proj"
    def setting(module: str) -> tuple:
        q = quant.get(module, quant)  # per-layer entries name the modules unlike the default
        return q["group_size"], q["bits"], q["mode"]

    assert setting(expert) == (32, 4, "mxfp4")
    assert setting("model.embed_tokens") == (32, 8, "affine")  # Q8_0
    kept = mx.load(str(info.path / "model.safetensors"))
    values = mx.dequantize(kept[f"{expert}.weight"], kept[f"{expert}.scales"], group_size=32, bits=4, mode="mxfp4")
    np.testing.assert_array_equal(np.array(values.astype(mx.float32)), reference[f"{expert}.weight"])

    imported, _ = load(str(info.path))
    got = _logits(imported)  # float32 scales and activations: only the stored scales' rounding remains
    source.load_weights([(k, mx.array(v).astype(mx.bfloat16)) for k, v in reference.items()])
    want = _logits(source)
    # The GGUF's float16 block scales are stored in the model's bfloat16: the only loss.
    print(f"\ngpt-oss kept MXFP4/Q8_0: max |logit diff| {np.abs(got - want).max():.2e} of {np.abs(want).max():.2f}")
    assert np.abs(got - want).max() < 0.01 * np.abs(want).max()


def test_per_layer_hyper_parameters_get_one_line(tmp_path, monkeypatch):
    """Some files store a list per layer (OpenELM, Nemotron); that is refused in one line, not a traceback."""
    import gguf

    per_head = gguf.GGUFWriter.add_head_count_kv
    monkeypatch.setattr(gguf.GGUFWriter, "add_head_count_kv", lambda self, n: per_head(self, [n, n]))
    config, source = build_source("llama", tmp_path / "src")
    write_family_gguf("llama", config, source, tmp_path / "src", tmp_path / "m.gguf")
    with pytest.raises(OptiqError, match="cannot read its llama hyper-parameters") as err:
        import_gguf(tmp_path / "m.gguf")
    assert "\n" not in str(err.value)


def test_gpt_oss_stops_at_return_and_call_not_at_end():
    """Harmony's <|end|> closes the analysis channel; only <|return|>, <|endoftext|>, <|call|> end a reply."""
    from types import SimpleNamespace

    from optiq_tui.library.gguf_arch import FAMILIES as GGUF_FAMILIES
    from optiq_tui.library.gguf_arch import Hparams, model_config

    tokens = ["a", "<|endoftext|>", "<|return|>", "<|end|>", "<|call|>"]
    meta = {"gpt-oss.block_count": 2, "gpt-oss.embedding_length": 64, "gpt-oss.attention.head_count": 4,
            "gpt-oss.expert_count": 4, "gpt-oss.expert_used_count": 2, "gpt-oss.attention.sliding_window": 128,
            "gpt-oss.expert_feed_forward_length": 64, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.eot_token_id": 3}
    tensors = {"token_embd.weight": SimpleNamespace(shape=[64, len(tokens)])}
    config = model_config(GGUF_FAMILIES["gpt-oss"], Hparams("gpt-oss", meta, tensors), meta)
    assert config["eos_token_id"] == [2, 1, 4]
    assert config["layer_types"] == ["sliding_attention", "full_attention"]


def _dequantizable_types() -> list:
    from optiq_tui.library.gguf_import import _can_dequantize

    return [q for q in Q if q.name not in ("F32", "F16") and _can_dequantize(q.name)]


@pytest.mark.parametrize("qtype", _dequantizable_types(), ids=lambda q: q.name)
def test_every_dequantizable_tensor_type(qtype, tmp_path):
    """Each tensor type the gguf package reads imports to the values it holds (a llama, all matrices one type)."""
    from mlx_lm import load

    config, source = build_source("llama", tmp_path / "src")
    reference = write_family_gguf("llama", config, source, tmp_path / "src", tmp_path / "m.gguf", qtypes=[qtype])
    info = import_gguf(tmp_path / "m.gguf")
    assert qtype.name in json.loads((info.path / PROVENANCE_FILE).read_text())["gguf_types"]
    imported, _ = load(str(info.path))
    dtype = mx.bfloat16 if qtype == Q.BF16 else mx.float16
    source.load_weights([(k, mx.array(v).astype(dtype)) for k, v in reference.items()])
    got, want = _logits(imported), _logits(source)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


def test_unsupported_tokenizer_is_one_line_before_any_work(tmp_path, monkeypatch):
    """A vocabulary `tokenizers` cannot be built from here (T5's unigram) stops the import up front."""
    import gguf

    from optiq_tui.library.shards import ShardWriter
    from optiq_tui.settings import paths

    monkeypatch.setattr(gguf.GGUFWriter, "add_tokenizer_pre", lambda self, pre: None)
    monkeypatch.setattr(gguf.GGUFWriter, "add_tokenizer_model",
                        lambda self, m: self.add_string("tokenizer.ggml.model", "t5"))
    monkeypatch.setattr(ShardWriter, "add", lambda *a: pytest.fail("converted before checking the tokenizer"))
    config, source = build_source("qwen3", tmp_path / "src")
    write_family_gguf("qwen3", config, source, tmp_path / "src", tmp_path / "m.gguf")
    with pytest.raises(OptiqError, match="tokenizer type 't5' is not supported") as err:
        import_gguf(tmp_path / "m.gguf")
    assert "\n" not in str(err.value)
    assert list(paths().models.iterdir()) == [] and list(paths().staging.iterdir()) == []


def test_unknown_pre_tokenizer_is_said(tmp_path, monkeypatch):
    import gguf

    monkeypatch.setattr(gguf.GGUFWriter, "add_tokenizer_pre",
                        lambda self, pre: self.add_string("tokenizer.ggml.pre", "exotic"))
    config, source = build_source("qwen3", tmp_path / "src")
    write_family_gguf("qwen3", config, source, tmp_path / "src", tmp_path / "m.gguf")
    logs: list[str] = []
    import_gguf(tmp_path / "m.gguf", progress=lambda e: logs.append(e.message) if isinstance(e, Log) else None)
    assert any("pre-tokenizer 'exotic' is not known" in line for line in logs)
