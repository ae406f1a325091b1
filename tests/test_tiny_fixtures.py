import mlx.core as mx
from mlx_lm import load


def test_tiny_llama_loads_with_stock_mlx_lm(tiny_llama_dir):
    model, tokenizer = load(str(tiny_llama_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True
    )
    logits = model(mx.array([prompt]))
    assert logits.shape[-1] == model.args.vocab_size


def test_tiny_qwen3_template_switches_thinking(tiny_qwen3_dir):
    _model, tokenizer = load(str(tiny_qwen3_dir))
    msgs = [{"role": "user", "content": "hi"}]
    off = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    on = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert "<think>" in off and "<think>" not in on
