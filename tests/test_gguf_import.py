"""GGUF import: every supported tensor type, the tokenizer, and the failure paths."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from optiq_tui.library.gguf_import import PROVENANCE_FILE, import_gguf
from optiq_tui.progress import Cancelled, OptiqError, Progress
from optiq_tui.settings import paths
from tests.gguf_files import Q, spm_vocab, write_llama_gguf
from tests.tiny import build_tiny_llama

PROMPT_IDS = [5, 17, 42, 99, 7, 250, 3, 64]


@pytest.fixture(scope="session")
def wide_llama_dir(tmp_path_factory) -> Path:
    """A tiny llama whose matrices are 256 wide: k-quant blocks hold 256 values."""
    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny") / "wide-llama", hidden=256, layers=1, intermediate=512, tie=False
    )


def _logits(model) -> np.ndarray:
    out = model(mx.array([PROMPT_IDS]))
    return np.array(out.astype(mx.float32))[0]


def _reference_logits(model_dir: Path, reference: dict[str, np.ndarray]) -> np.ndarray:
    from mlx_lm.models import llama

    config = json.loads((model_dir / "config.json").read_text())
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.load_weights([(k, mx.array(v)) for k, v in reference.items()])
    return _logits(model)


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    # The import writes float16; a float32 reference differs by f16 rounding only.
    scale = np.abs(want).max()
    assert np.abs(got - want).max() < 0.02 * scale, np.abs(got - want).max() / scale
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.75


def _nothing_left() -> None:
    assert list(paths().models.iterdir()) == []
    assert list(paths().staging.iterdir()) == []


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1])
def test_import_matches_what_the_file_holds(tiny_llama_dir, tmp_path, qtype):
    from mlx_lm import load

    gguf_path = tmp_path / f"tiny.{qtype.name}.gguf"
    reference = write_llama_gguf(tiny_llama_dir, gguf_path, qtype)
    info = import_gguf(gguf_path, "tiny")

    assert info.path == paths().models / "tiny"
    assert info.quant_kind == "gguf" and info.quant.startswith(f"GGUF {qtype.name} →")
    assert info.model_type == "llama" and info.chat_format == "template"
    model, _tok = load(str(info.path))
    _assert_close(_logits(model), _reference_logits(tiny_llama_dir, reference))
    provenance = json.loads((info.path / PROVENANCE_FILE).read_text())
    assert provenance["dequantized"] is True and provenance["weight_type"] == qtype.name
    assert len(provenance["sha256"]) == 64
    config = json.loads((info.path / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and "quantization" not in config
    assert config["torch_dtype"] == ("bfloat16" if qtype == Q.BF16 else "float16")


def test_quantized_import_stays_close_to_the_source(tiny_llama_dir, tmp_path):
    """Q8_0 is near-lossless: the imported model answers like the original weights."""
    from mlx_lm import load

    write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf", Q.Q8_0)
    original, _ = load(str(tiny_llama_dir))
    imported, _ = load(str(import_gguf(tmp_path / "t.gguf").path))
    _assert_close(_logits(imported), _logits(original))


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K, Q.Q2_K, Q.Q3_K, Q.Q5_K])
def test_k_quants_dequantize(wide_llama_dir, tmp_path, qtype):
    from mlx_lm import load

    reference = write_llama_gguf(wide_llama_dir, tmp_path / "wide.gguf", qtype)
    info = import_gguf(tmp_path / "wide.gguf", "wide")
    model, _ = load(str(info.path))
    _assert_close(_logits(model), _reference_logits(wide_llama_dir, reference))
    assert json.loads((info.path / "config.json").read_text())["tie_word_embeddings"] is False


@pytest.mark.parametrize("qtype,bits", [(Q.Q4_0, 4), (Q.Q4_1, 4), (Q.Q8_0, 8)])
def test_keep_quantized_is_exact(tiny_llama_dir, tmp_path, qtype, bits):
    from mlx_lm import load

    reference = write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf", qtype)
    info = import_gguf(tmp_path / "t.gguf", "kept", keep_quantized=True)
    config = json.loads((info.path / "config.json").read_text())
    assert config["quantization"]["bits"] == bits and config["quantization"]["group_size"] == 32
    assert info.bit_histogram == {bits: 15}  # 7 linears x 2 layers + the embedding
    assert info.bpw < 10
    model, _ = load(str(info.path))
    _assert_close(_logits(model), _reference_logits(tiny_llama_dir, reference))


def test_keep_quantized_refuses_types_mlx_cannot_hold(wide_llama_dir, tmp_path):
    write_llama_gguf(wide_llama_dir, tmp_path / "k.gguf", Q.Q4_K)
    with pytest.raises(OptiqError, match="keep-quantized"):
        import_gguf(tmp_path / "k.gguf", keep_quantized=True)
    _nothing_left()


def test_tokenizer_and_chat_template_survive(tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf", Q.F16)
    info = import_gguf(tmp_path / "t.gguf", "tok")
    source = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    imported = AutoTokenizer.from_pretrained(str(info.path))
    for text in ["Paris is the capital of France.", "def add(a, b):\n    return a + b", "12 times 7 <|im_end|>"]:
        assert imported.encode(text) == source.encode(text)
    messages = [{"role": "user", "content": "hi"}]
    assert imported.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        source.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )
    assert imported.eos_token == "<|im_end|>"


def test_progress_is_reported_in_bytes(tiny_llama_dir, tmp_path):
    write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf", Q.Q8_0)
    events = []
    import_gguf(tmp_path / "t.gguf", progress=events.append)
    convert = [e for e in events if isinstance(e, Progress) and e.stage == "convert"]
    assert convert and convert[-1].done == convert[-1].total
    assert all(a.done <= b.done for a, b in zip(convert, convert[1:]))


def test_cancel_mid_import_leaves_nothing(tiny_llama_dir, tmp_path):
    write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf", Q.Q8_0)
    cancel = threading.Event()

    def progress(event):
        if isinstance(event, Progress) and event.stage == "convert":
            cancel.set()

    with pytest.raises(Cancelled):
        import_gguf(tmp_path / "t.gguf", progress=progress, cancel=cancel)
    _nothing_left()


def test_full_disk_gives_a_clear_error_and_leaves_nothing(tiny_llama_dir, tmp_path, monkeypatch):
    from optiq_tui.library.shards import ShardWriter

    write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf", Q.F16)

    def no_space(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ShardWriter, "flush", no_space)
    with pytest.raises(OptiqError, match="disk is full"):
        import_gguf(tmp_path / "t.gguf")
    _nothing_left()


def test_truncated_file(tiny_llama_dir, tmp_path):
    path = tmp_path / "t.gguf"
    write_llama_gguf(tiny_llama_dir, path, Q.F16)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OptiqError, match="truncated"):
        import_gguf(path)
    _nothing_left()


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("this is not a model\n" * 100)
    with pytest.raises(OptiqError, match="not a GGUF file"):
        import_gguf(path)
    with pytest.raises(OptiqError, match="no such file"):
        import_gguf(tmp_path / "missing.gguf")
    _nothing_left()


def test_unsupported_tensor_type(tiny_llama_dir, tmp_path):
    path = tmp_path / "t.gguf"
    write_llama_gguf(tiny_llama_dir, path, Q.F16, extra_tensor=("blk.0.attn_q.bias", np.zeros(64, dtype=np.int32)))
    with pytest.raises(OptiqError, match="I32"):
        import_gguf(path)
    _nothing_left()


def test_unknown_architecture(tiny_llama_dir, tmp_path):
    path = tmp_path / "t.gguf"
    write_llama_gguf(tiny_llama_dir, path, Q.F16, arch="bert")
    with pytest.raises(OptiqError, match="'bert' model"):
        import_gguf(path)
    _nothing_left()


def test_name_clash_is_refused(tiny_llama_dir, tmp_path):
    write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf", Q.F16)
    import_gguf(tmp_path / "t.gguf", "same")
    with pytest.raises(OptiqError, match="already exists"):
        import_gguf(tmp_path / "t.gguf", "same")


def test_sentencepiece_vocabulary(tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    vocab_size = json.loads((tiny_llama_dir / "config.json").read_text())["vocab_size"]
    spm, reference = spm_vocab(vocab_size)
    write_llama_gguf(tiny_llama_dir, tmp_path / "spm.gguf", Q.F16, spm=spm)
    info = import_gguf(tmp_path / "spm.gguf", "spm")
    imported = AutoTokenizer.from_pretrained(str(info.path))
    for text in ["Paris is the capital of France.", "capitalism brownies foxes", "thequickbrownfoxisthecapitalofrance", "asthe heis", "theirs: 12, 84", "déjà vu"]:
        ids = imported.encode(text)
        assert ids == reference.encode(text).ids
        assert imported.decode(ids, skip_special_tokens=True) == text
    assert imported.bos_token == "<s>" and imported.eos_token == "</s>"


def test_qwen2_architecture(tiny_llama_dir, tmp_path):
    """qwen2 GGUFs keep Q/K rows as they are and carry q/k/v biases."""
    import shutil

    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.models import qwen2

    folder = shutil.copytree(tiny_llama_dir, tmp_path / "tiny-qwen2")
    config = {**json.loads((folder / "config.json").read_text()), "model_type": "qwen2"}
    (folder / "config.json").write_text(json.dumps(config))
    mx.random.seed(1)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))

    reference = write_llama_gguf(folder, tmp_path / "q.gguf", Q.Q8_0, arch="qwen2")
    assert "model.layers.0.self_attn.q_proj.bias" in reference
    info = import_gguf(tmp_path / "q.gguf", "qwen")
    assert info.model_type == "qwen2"
    imported, _ = load(str(info.path))
    want = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    want.load_weights([(k, mx.array(v)) for k, v in reference.items()])
    _assert_close(_logits(imported), _logits(want))


def test_llama3_rope_scaling_is_recovered(tiny_llama_dir, tmp_path):
    """Llama 3.x GGUFs carry rope scaling as a `rope_freqs` tensor; the import turns it back into config."""
    import math

    from mlx_lm import load
    from mlx_lm.models import llama

    config = json.loads((tiny_llama_dir / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    factors = []  # llama.cpp's convert_hf_to_gguf formula for factor 8, original context 8192
    for f in 1.0 / (config["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim)):
        wavelen = 2 * math.pi / f
        if wavelen < 8192 / 4:
            factors.append(1.0)
        elif wavelen > 8192:
            factors.append(8.0)
        else:
            smooth = (8192 / wavelen - 1) / 3
            factors.append(1 / ((1 - smooth) / 8 + smooth))
    reference = write_llama_gguf(tiny_llama_dir, tmp_path / "l3.gguf", Q.F16,
                                 extra_tensor=("rope_freqs.weight", np.array(factors, dtype=np.float32)))
    info = import_gguf(tmp_path / "l3.gguf", "l3")
    scaling = json.loads((info.path / "config.json").read_text())["rope_scaling"]
    assert scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    want = llama.Model(llama.ModelArgs.from_dict({**config, "rope_scaling": scaling}))
    want.load_weights([(k, mx.array(v)) for k, v in reference.items()])
    imported, _ = load(str(info.path))
    _assert_close(_logits(imported), _logits(want))
