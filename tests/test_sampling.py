"""Sampler defaults come from the model; bad sampler values are refused with one line."""

from __future__ import annotations

import json

import pytest

from optiq_tui.cli import main
from optiq_tui.engine.sampling import DEFAULT_MIN_P, SamplerSettings, model_sampler, resolve_sampler
from optiq_tui.progress import OptiqError


def write_config(folder, values) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generation_config.json").write_text(json.dumps(values))


def test_generation_config_gives_the_defaults(tmp_path):
    write_config(tmp_path, {"temperature": 0.3, "top_p": 0.8, "top_k": 20, "eos_token_id": 2})
    chosen = model_sampler(tmp_path)
    assert chosen.source == "generation_config.json"
    assert (chosen.settings.temperature, chosen.settings.top_p, chosen.settings.top_k) == (0.3, 0.8, 20)


def test_do_sample_false_means_greedy(tmp_path):
    write_config(tmp_path, {"do_sample": False, "temperature": 0.9})
    assert model_sampler(tmp_path).settings.temperature == 0.0


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"eos_token_id": 2}', '{"temperature": -1}'])
def test_no_usable_recommendation_gives_the_conservative_default(tmp_path, content):
    (tmp_path / "generation_config.json").write_text(content)
    chosen = model_sampler(tmp_path)
    assert chosen.source == "app default"
    assert chosen.settings.temperature <= 0.6 and chosen.settings.min_p == DEFAULT_MIN_P


def test_user_choices_win_and_say_so(tmp_path):
    write_config(tmp_path, {"temperature": 0.2, "top_p": 0.9})
    settings, source = resolve_sampler(tmp_path, temperature=None, max_tokens=50)
    assert (settings.temperature, settings.max_tokens, source) == (0.2, 50, "generation_config.json")
    settings, source = resolve_sampler(tmp_path, temperature=0.0)
    assert (settings.temperature, settings.top_p, source) == (0.0, 0.9, "you")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("temperature", -1.0, "temperature"), ("top_p", 0.0, "top-p"), ("top_p", 1.5, "top-p"),
     ("max_tokens", -1, "max tokens"), ("max_tokens", 0, "max tokens"), ("top_k", -3, "top-k")],
)
def test_bad_values_are_refused(field, value, words):
    with pytest.raises(OptiqError, match=words):
        SamplerSettings(**{field: value})


@pytest.mark.parametrize(("flag", "value"), [("--temp", "-1"), ("--max-tokens", "-1"), ("--top-p", "2")])
def test_run_refuses_bad_sampler_flags_before_loading(tiny_llama_dir, capsys, monkeypatch, flag, value):
    from optiq_tui.engine import loader

    def no_load(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(loader, "load", no_load)
    assert main(["run", str(tiny_llama_dir), "Hi", flag, value]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_run_json_shows_the_sampler_and_where_it_came_from(tiny_llama_dir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "with-config"
    shutil.copytree(tiny_llama_dir, folder)
    write_config(folder, {"temperature": 0.25, "top_p": 0.85})
    assert main(["run", str(folder), "Hi", "--max-tokens", "3", "--seed", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sampler"]["temperature"] == 0.25 and out["sampler"]["top_p"] == 0.85
    assert out["sampler_source"] == "generation_config.json"


def test_describe_is_short():
    assert SamplerSettings(temperature=0.2, top_p=0.9, max_tokens=512).describe() == "temp 0.2 · top-p 0.9 · max 512"
    assert SamplerSettings(temperature=0.0).describe().startswith("greedy")


def test_quantize_checks_the_calibration_file_before_loading(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    from optiq_tui.quant import pipeline

    def no_quantize(*_args, **_kwargs):
        raise AssertionError("the quantize started before its inputs were checked")

    monkeypatch.setattr(pipeline, "quantize", no_quantize)
    assert main(["quantize", str(tiny_llama_dir), "--calibration", str(tmp_path / "missing.txt")]) == 1
    err = capsys.readouterr().err
    assert "calibration file" in err and "does not exist" in err and "Traceback" not in err


def test_a_gguf_recommended_sampler_survives_import(tiny_llama_dir, tmp_path):
    from optiq_tui.library.gguf_import import import_gguf
    from tests.gguf_files import Q, write_llama_gguf

    gguf = tmp_path / "with-sampler.gguf"
    write_llama_gguf(tiny_llama_dir, gguf, Q.F16, sampling={"temp": 0.3, "top_p": 0.8, "top_k": 40})
    info = import_gguf(gguf, "with-sampler")
    chosen = model_sampler(info.path)
    assert chosen.source == "generation_config.json"
    assert (round(chosen.settings.temperature, 3), round(chosen.settings.top_p, 3), chosen.settings.top_k) == (0.3, 0.8, 40)


def test_import_checks_the_space_it_needs_first(tiny_llama_dir, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from optiq_tui.library.gguf_import import import_gguf
    from optiq_tui.settings import paths
    from tests.gguf_files import Q, write_llama_gguf

    gguf = tmp_path / "t.gguf"
    write_llama_gguf(tiny_llama_dir, gguf, Q.Q8_0)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(OptiqError, match=r"needs about .* free in .*only 1.0 KB is free"):
        import_gguf(gguf, "tiny")
    assert list(paths().models.iterdir()) == [] and list(paths().staging.iterdir()) == []
