"""The whole quantize: load, calibrate, measure, allocate, quantize, write, verify.

A plain function reporting progress events and honouring ``cancel``; the
result enters the library only when written and verified (``staged_model``).
The sensitivity measurements are cached, so the same source and calibration
at another budget skip straight to the allocation.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from optiq_tui.progress import Log, OptiqError, ProgressFn, check_cancel, no_progress
from optiq_tui.quant.config import KEEP, QuantConfig, Width
from optiq_tui.quant.events import STAGES, LayerScore, StageChanged
from optiq_tui.library.model_files import OPTIQ_QUANT_FILE



@dataclass(frozen=True)
class QuantResult:
    """What a finished quantize made and how good it is."""

    name: str
    path: Path
    method: str  # "optiq" | "uniform"
    preset: str | None
    target_bpw: float | None
    achieved_bpw: float
    bit_histogram: dict[int, int]
    timings: dict[str, float]
    quality: dict[str, Any] | None
    cache_hit: bool
    unquantized: list[str] = field(default_factory=list)
    peak_memory_bytes: int = 0
    source_bytes: int = 0
    # The refinement's held-back KL before and after, steps and time (RefineResult.to_dict()).
    refine: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["bit_histogram"] = {str(k): v for k, v in sorted(self.bit_histogram.items())}
        return d


class _Stages:
    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.peaks: dict[str, int] = {}

    @contextmanager
    def run(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        self.progress(StageChanged(stage, "running"))
        try:
            yield
        except BaseException:
            self.progress(StageChanged(stage, "failed", time.perf_counter() - t0))
            raise
        self.timings[stage] = round(time.perf_counter() - t0, 2)
        import mlx.core as mx

        # Peak MLX memory of each stage (reset after reading), for the memory budget.
        self.peaks[stage] = int(mx.get_peak_memory())
        mx.reset_peak_memory()
        self.progress(StageChanged(stage, "done", self.timings[stage]))

    def skip(self, stage: str) -> None:
        self.progress(StageChanged(stage, "skipped"))


def default_name(source_name: str, config: QuantConfig) -> str:
    if config.uniform_bits is not None:
        return f"{source_name}-{config.uniform_bits}bit-g{config.group_size}"
    tag = config.preset.replace("optiq-", "").replace("/", "-")
    return f"{source_name}-optiq-{tag}-{config.target_bpw:g}bpw"


def load_source(path: Path, dequantize: bool):
    """(model, tokenizer, config) of an unquantized source; refuses a quantized one unless asked."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm import load
    from mlx_lm.utils import dequantize_model

    model, tokenizer, config = load(str(path), return_config=True)
    quantized = any("scales" in m for _, m in model.named_modules() if isinstance(m, nn.Module))
    if quantized or "quantization" in config:
        if not dequantize:
            q = config.get("quantization") or {}
            raise OptiqError(
                f"{path.name} is already quantized ({q.get('mode', 'affine')}, {q.get('bits', '?')}-bit); "
                "quantizing it again compounds the rounding errors. Pick its unquantized source, or "
                "pass --dequantize to dequantize it first (the result cannot be better than this quant)."
            )
        dequantize_model(model)
        config = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config")}
    # Kept in the source's dtype: scales, biases and unquantized layers are written in it too,
    # and the bit count charges them at that width (a float32 source costs twice the overhead).
    mx.eval(model.parameters())
    return model, tokenizer, config


def quantize(source, config: QuantConfig, *, progress: ProgressFn = no_progress,
             cancel: threading.Event | None = None) -> QuantResult:
    """Quantize the library model ``source`` (a ModelInfo) as ``config`` says."""
    import mlx.core as mx

    from optiq_tui.library.staging import safe_name, staged_model
    from optiq_tui.settings import paths

    config.validate()
    stages = _Stages(progress)
    name = config.name or default_name(source.name, config)
    final = paths().models / safe_name(name)
    if final.exists():
        raise OptiqError(f"a model named {final.name!r} already exists; choose another --name")
    mx.reset_peak_memory()

    with stages.run("load"):
        model, tokenizer, model_cfg = load_source(Path(source.path), config.dequantize)
        from optiq_tui.quant.backbone import Backbone
        from optiq_tui.quant.layers import bit_budget, quant_items

        tied = not hasattr(model, "lm_head")
        items = quant_items(model, config.group_size, tied)
        budget = bit_budget(model, items, config.group_size)
        for item in items:
            if not item.quantizable:
                progress(Log(f"{item.path}: {item.reason}", "warning"))
        check_cancel(cancel)

    ready: dict = {}  # compensated layers the allocation already made (optiq-plus's gate)
    if config.uniform_bits is not None:
        for stage in ("calibrate", "measure", "allocate"):
            stages.skip(stage)
        choice = {i.path: config.uniform_bits for i in items if i.quantizable}
        scores: dict[str, dict[int, float]] = {}
        cal_meta = None
        cache_hit = False
    else:
        from optiq_tui.quant.measure import measure_and_allocate

        bb = Backbone(model, model_cfg)
        choice, scores, cal_meta, cache_hit = measure_and_allocate(
            source, config, bb, tokenizer, items, budget, stages, progress=progress, cancel=cancel,
            compensated=ready)
        del bb

    with stages.run("quantize"):
        from mlx_lm.utils import compute_bits_per_weight

        from optiq_tui.quant.writer import quantize_in_place

        check_cancel(cancel)
        targets = _refine_targets(source, model, tokenizer, config, progress, cancel)
        # The low-width gate may have compensated the chosen plan already.
        triples = ready or _compensate(source, model, tokenizer, config, choice, progress, cancel)
        out_cfg = quantize_in_place(model, model_cfg, choice, config.group_size)
        if triples:
            from optiq_tui.quant.plus import apply_triples

            apply_triples(model, triples)
        achieved = compute_bits_per_weight(model)
        progress(Log(f"quantized: {achieved:.3f} bits per weight (predicted {budget.bpw(items, _full(items, choice)):.3f})"))

    refined = None
    if targets is None:
        stages.skip("refine")
    else:
        with stages.run("refine"):
            from optiq_tui.quant.refine import refine

            seconds = None if config.refine_minutes is None else config.refine_minutes * 60
            refined = refine(model, targets, seconds=seconds, max_steps=config.refine_steps,
                             progress=progress, cancel=cancel).to_dict()
            del targets

    with staged_model(name) as out:
        with stages.run("write"):
            from optiq_tui.quant.writer import write_model

            check_cancel(cancel)
            write_model(model, out_cfg, Path(source.path), out)
            del model
        quality = None
        if config.verify:
            with stages.run("verify"):
                quality = _verify(source, config, out, achieved, items, budget, progress, cancel)
        else:
            stages.skip("verify")
        peak = max([int(mx.get_peak_memory()), *stages.peaks.values()])
        meta = _metadata(name, source, config, choice, scores, items, achieved, cal_meta,
                         stages.timings, quality, peak, dict(stages.peaks))
        meta["refine"] = refined
        _write_card_and_meta(out, meta, items, choice, scores)
        check_cancel(cancel)
    hist = dict(sorted(Counter(int(b) for b in _full(items, choice).values()).items()))
    return QuantResult(
        name=final.name, path=final, method=meta["method"], preset=meta["preset"],
        target_bpw=meta["target_bpw"], achieved_bpw=achieved, bit_histogram=hist,
        timings=dict(stages.timings), quality=quality, cache_hit=cache_hit,
        unquantized=[i.path for i in items if not i.quantizable],
        peak_memory_bytes=peak, source_bytes=source.size_bytes, refine=refined,
    )


def _compensate(source, model, tokenizer, config: QuantConfig, choice, progress, cancel) -> dict:
    """Compensated layers for a preset that asks for them (on the measurement's calibration)."""
    if config.uniform_bits is not None or not config.preset_info.compensate:
        return {}
    from optiq_tui.quant.calibration import calibration_for
    from optiq_tui.quant.plus import compensate_plans

    cal = calibration_for(tokenizer, config, model=model, source=Path(source.path), progress=progress,
                          cancel=cancel)
    progress(Log(f"error compensation on {len(cal.sequences)} calibration sequences"))
    return compensate_plans(model, [choice], config.group_size, cal.sequences,
                            progress=progress, cancel=cancel)[0]


def _refine_targets(source, model, tokenizer, config: QuantConfig, progress, cancel):
    """The source's logits on calibration for the refinement (None when it is off): taken
    here, before the model is compensated or quantized in place."""
    if not config.refines:
        return None
    from optiq_tui.quant.calibration import calibration_for
    from optiq_tui.quant.refine import source_targets

    cal = calibration_for(tokenizer, config, model=model, source=Path(source.path), progress=progress,
                          cancel=cancel)
    t0 = time.perf_counter()
    targets = source_targets(model, cal.sequences, cal.held_back, cancel=cancel)
    progress(Log(f"refinement targets: the source's logits on {len(cal.sequences)} calibration "
                 f"and {len(targets.held_back)} held-back sequences ({time.perf_counter() - t0:.0f} s)"))
    return targets


def _full(items, choice: dict[str, int]) -> dict[str, int]:
    return {i.path: choice.get(i.path, KEEP) if i.quantizable else KEEP for i in items}


def _verify(source, config, out: Path, achieved: float, items, budget, progress, cancel):
    from optiq_tui.quant.verify import held_out_quality

    return held_out_quality(Path(source.path), out, lambda p: load_source(p, config.dequantize),
                            achieved, items, budget, n_tokens=config.verify_tokens,
                            checked=config.uniform_bits is None, flips=config.verify_flips,
                            progress=progress, cancel=cancel)


def _metadata(name, source, config, choice, scores, items, achieved, cal_meta, timings,
              quality, peak, stages_peaks) -> dict[str, Any]:
    uniform = config.uniform_bits is not None
    full = _full(items, choice)
    return {
        "format": 1,
        "name": name,
        "method": "uniform" if uniform else "optiq",
        "preset": None if uniform else config.preset,
        "uniform_bits": config.uniform_bits,
        "source_model": source.name,
        "source_path": str(source.path),
        "target_bpw": None if uniform else config.target_bpw,
        "achieved_bpw": round(achieved, 4),
        "group_size": config.group_size,
        "widths": [config.uniform_bits] if uniform else list(config.widths),
        "bit_histogram": {str(k): v for k, v in sorted(Counter(int(b) for b in full.values()).items())},
        "layers": full,  # bits (a Width writes as its bits); its group, where not group_size:
        "layer_groups": {p: b.group for p, b in full.items() if isinstance(b, Width)},
        "calibration": cal_meta,
        "timings": timings,
        "quality": quality,
        "peak_memory_bytes": peak,
        "peak_memory_by_stage": stages_peaks,
        "source_bytes": source.size_bytes,
        "kv_bits": config.kv_bits,
    }


def _write_card_and_meta(out: Path, meta, items, choice, scores) -> None:
    from optiq_tui.quant.card import model_card

    rows = [{"path": i.path, "shape": list(i.shape), "bits": meta["layers"][i.path],
             "kl_by_bits": scores.get(i.path, {}), "note": i.reason} for i in items]
    (out / OPTIQ_QUANT_FILE).write_text(json.dumps(meta, indent=2))
    (out / "README.md").write_text(model_card(meta, rows))


__all__ = ["QuantResult", "STAGES", "LayerScore", "StageChanged", "quantize", "default_name"]
