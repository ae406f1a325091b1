"""The quant's model card carries the receipts: KL with its 95% interval, perplexity ratio, flips."""

from __future__ import annotations

from optiq_tui.quant.card import model_card

META = {"name": "tiny-optiq", "source_model": "tiny", "method": "uniform", "uniform_bits": 4,
        "group_size": 64, "target_bpw": 4.5, "achieved_bpw": 4.5}
ROW = {"path": "model.layers.0.mlp.down_proj", "shape": [64, 128], "bits": 4}


def _quality(flips=None, **quant):
    q = {"bpw": 4.5, "mean_kl": 0.0412, "p99_kl": 0.31, "top1": 0.9, "ppl": 20.6,
         "kl_low": 0.0350, "kl_high": 0.0480, "kl_sequences": 4, "ppl_ratio": 20.6 / 19.8, **quant}
    if flips is not None:
        q["flips"] = flips
    return {"tokens": 2048, "source_ppl": 19.8, "quant": q}


def test_card_shows_the_interval_ratio_and_flips():
    flips = {"changed": [1], "prompts": ["What is 2 + 2?", "What is the capital of France?"],
             "source_answers": ["4", "Paris."], "answers": ["4", "Monaco."]}
    card = model_card({**META, "quality": _quality(flips)}, [ROW])
    assert "| this quant | 4.500 | 0.0412 | 0.0350–0.0480 | 0.310 | 90.0% | 20.60 | 1.040 |" in card
    assert ("Receipts for this quant: mean KL 0.0412 nats/token, 95% CI [0.0350, 0.0480] "
            "(bootstrap over sequences") in card
    assert "flips: 1 of 2 greedy prompts (50%) change between right and wrong against the source" in card
    assert "“What is the capital of France?” → “Monaco.” (source: “Paris.”)" in card


def test_card_without_flips_or_from_an_older_record():
    card = model_card({**META, "quality": _quality()}, [ROW])
    assert "95% CI [0.0350, 0.0480]" in card and "flips" not in card
    old = _quality()
    for key in ("kl_low", "kl_high", "kl_sequences", "ppl_ratio"):
        old["quant"].pop(key)
    card = model_card({**META, "quality": old}, [ROW])
    assert "| this quant | 4.500 | 0.0412 | — | 0.310 | 90.0% | 20.60 | — |" in card
    assert "Receipts" not in card
