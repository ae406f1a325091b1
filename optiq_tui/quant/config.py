"""What a quantize run is asked to do: budget, candidate widths, group size, preset."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from optiq_tui.library.model_files import KV_BITS
from optiq_tui.progress import OptiqError

# Widths mlx's affine quantizer packs; 16 means "keep unquantized" (source dtype).
SUPPORTED_BITS = (2, 3, 4, 5, 6, 8)
KEEP = 16
SUPPORTED_GROUPS = (32, 64, 128)


class Width(int):
    """A candidate width at a group size other than the run's own (``QuantConfig.group_size``).

    An int (its bits), so every comparison of widths (``<= 3``, ``== KEEP``) reads bits,
    while equality and hashing include the group: 4 at g128 is another candidate than
    the plain int 4 (4 bits at the run's group), and JSON writes it as its bits. Made
    by :func:`width`, which gives the plain int for the run's group.
    """

    group: int

    def __new__(cls, bits: int, group: int) -> "Width":
        obj = super().__new__(cls, bits)
        obj.group = group
        return obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Width) and int(self) == int(other) and self.group == other.group

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((int(self), self.group))

    def __repr__(self) -> str:
        return f"{int(self)}g{self.group}"


def width(bits: int, group: int, run_group: int) -> int:
    """``bits`` at ``group``: the plain int at the run's own group, else a :class:`Width`."""
    return bits if group == run_group or bits == KEEP else Width(bits, group)


def group_of(w: int, run_group: int) -> int:
    """The group size a candidate width quantizes with."""
    return w.group if isinstance(w, Width) else run_group


def at_run_group(by_width: dict) -> dict[int, float]:
    """Only the widths at the run's own group, keyed by plain bits (progress events and the
    sensitivity chart show one value per width)."""
    return {int(b): v for b, v in by_width.items() if not isinstance(b, Width)}


def width_text(w: int) -> str:
    """How a width reads in a card or a log: "4", "4 g128", "16 (kept)"."""
    if w == KEEP:
        return "16 (kept)"
    return f"{int(w)} g{w.group}" if isinstance(w, Width) else str(int(w))


@dataclass(frozen=True)
class Preset:
    """A named recipe: candidate widths, group size, default budget, and gating."""

    name: str
    bits: tuple[int, ...]
    group_size: int
    target_bpw: float
    allow_keep: bool = False
    # Widths at or below this are only kept if held-back p99 KL (within 5%) and perplexity do not worsen.
    gate_below: int | None = None
    description: str = ""
    # Quantize each block layer at its width with error compensation (quant/plus.py).
    compensate: bool = False
    # Other group sizes a layer may take besides the run's: each width at each group is a
    # candidate (4-bit g128 costs 4.25 bpw against g64's 4.50), where the input dimension allows.
    other_groups: tuple[int, ...] = ()


PRESETS: dict[str, Preset] = {
    "optiq-4/8": Preset(
        "optiq-4/8", (4, 8), 64, 5.0,
        description="4 or 8 bits per layer, group 64 (the published OptiQ recipe)",
    ),
    "optiq-best": Preset(
        "optiq-best", (3, 4, 5, 6, 8), 64, 5.0, allow_keep=True, gate_below=3,
        description="widths 3-8 and unquantized; low widths gated on p99 KL and perplexity",
    ),
    "optiq-plus": Preset(
        "optiq-plus", (3, 4, 5, 6, 8), 64, 5.0, allow_keep=True, gate_below=3, compensate=True,
        # g32 too was measured on the demo: it changed the predicted KL of the 4.5 and 5.0 bpw
        # plans by under 0.1% and cost a third of the measurement's candidates.
        other_groups=(128,),
        description="widths 3-8 at group 64 or 128 per layer, each layer then quantized "
                    "with GPTQ-style error compensation",
    ),
}
DEFAULT_PRESET = "optiq-4/8"


@dataclass(frozen=True)
class QuantConfig:
    """A quantize request. ``bits`` None takes the preset's widths.

    ``uniform_bits`` set: write a plain mlx-lm uniform quant (the baseline), no measuring.
    """

    target_bpw: float = 5.0
    bits: tuple[int, ...] | None = (4, 8)
    group_size: int = 64
    preset: str = DEFAULT_PRESET
    calibration: Path | None = None
    # Saved conversations mixed into the calibration (ids; ("all",) for every one).
    conversations: tuple[str, ...] = ()
    name: str | None = None
    uniform_bits: int | None = None
    dequantize: bool = False
    allow_keep: bool | None = None
    # The source's own greedy answers to the shipped chat prompts join the shipped mix: opt-in,
    # as they cost minutes of generation on a CPU for a small gain (benchmarks/bench_calibration.py).
    self_answers: bool = False
    n_calibration: int = 8
    seq_len: int = 512
    verify: bool = True
    verify_tokens: int = 2048
    # Greedy answers of source and quant on the flip prompts, in the card: opt-in, as on a CPU
    # they add more than the held-out check itself (measured on the demo).
    verify_flips: bool = False
    # The KV-cache width the quant is planned for (optiq-chat plan --kv-bits); chat and serve use it.
    kv_bits: int | None = None
    # Refinement (quant/refine.py): minutes of tuning scales and biases against the source's
    # logits before writing; off when None. ``refine_steps`` caps it by steps (reproducible).
    refine_minutes: float | None = None
    refine_steps: int | None = None

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "QuantConfig":
        p = preset_named(preset)
        base = cls(target_bpw=p.target_bpw, bits=p.bits, group_size=p.group_size, preset=p.name)
        return replace(base, **overrides)

    def to_args(self) -> dict:
        """As JSON-able quantize job arguments (see :meth:`from_args`)."""
        from dataclasses import asdict

        args = asdict(self)
        args["bits"] = list(self.bits) if self.bits is not None else None
        args["calibration"] = str(Path(self.calibration).absolute()) if self.calibration else None
        return args

    @classmethod
    def from_args(cls, args: dict | None) -> "QuantConfig":
        """The config a quantize job's arguments describe (preset defaults under what they set)."""
        options = dict(args or {})
        preset = options.pop("preset", None) or DEFAULT_PRESET
        if options.get("bits") is not None:
            options["bits"] = tuple(options["bits"])
        if options.get("calibration"):
            options["calibration"] = Path(options["calibration"])
        if options.get("conversations"):
            options["conversations"] = tuple(options["conversations"])
        try:
            return cls.from_preset(preset, **options)
        except TypeError as exc:
            raise OptiqError(f"quantize: bad config ({exc})") from None

    @property
    def preset_info(self) -> Preset:
        return preset_named(self.preset)

    @property
    def widths(self) -> tuple[int, ...]:
        """The candidate widths, sorted; KEEP included when allowed."""
        widths = tuple(sorted(set(self.bits or self.preset_info.bits)))
        keep = self.preset_info.allow_keep if self.allow_keep is None else self.allow_keep
        return widths + ((KEEP,) if keep and KEEP not in widths else ())

    @property
    def candidates(self) -> tuple[int, ...]:
        """Every (width, group) a layer may take: ``widths`` at the run's group, and each
        quantized width at the preset's other groups (as :class:`Width`)."""
        others = [g for g in self.preset_info.other_groups if g != self.group_size]
        return self.widths + tuple(Width(b, g) for g in others for b in self.widths if b != KEEP)

    @property
    def refines(self) -> bool:
        """Whether the refinement stage runs (a time box or a step limit given)."""
        return self.refine_minutes is not None or self.refine_steps is not None

    def validate(self) -> "QuantConfig":
        """Raise OptiqError for a request that cannot be honoured; returns self."""
        if self.uniform_bits is not None:
            if self.uniform_bits not in SUPPORTED_BITS:
                raise OptiqError(
                    f"--uniform {self.uniform_bits} is not a width mlx can pack; "
                    f"use one of {', '.join(map(str, SUPPORTED_BITS))}"
                )
        for b in self.bits or ():
            if b not in SUPPORTED_BITS and b != KEEP:
                raise OptiqError(
                    f"bit width {b} is not supported; choose from "
                    f"{', '.join(map(str, SUPPORTED_BITS))} (16 = keep unquantized)"
                )
        if self.kv_bits is not None and self.kv_bits not in KV_BITS:
            raise OptiqError(f"--kv-bits {self.kv_bits} is not a width mlx can pack; use one of "
                             f"{', '.join(map(str, KV_BITS))}")
        if self.refine_minutes is not None and not 0 < self.refine_minutes <= 24 * 60:
            raise OptiqError(f"--refine {self.refine_minutes:g} minutes: give a time above 0 "
                             "and at most a day")
        if self.refine_steps is not None and self.refine_steps < 1:
            raise OptiqError("--refine-steps needs at least one step")
        if self.group_size not in SUPPORTED_GROUPS:
            raise OptiqError(
                f"group size {self.group_size} is not supported; use 32, 64 or 128"
            )
        if not 1.0 < self.target_bpw <= 32.0:
            raise OptiqError(f"target of {self.target_bpw} bits per weight makes no sense")
        if self.n_calibration < 1 or self.seq_len < 32:
            raise OptiqError("calibration needs at least one sequence of at least 32 tokens")
        if self.calibration is not None:
            # Checked here, before any model is loaded (loading can take minutes).
            from optiq_tui.quant.calibration import read_calibration_text

            read_calibration_text(self.calibration)
        if self.conversations:
            from optiq_tui.quant.calibration import conversation_documents

            conversation_documents(self.conversations)  # unknown ids and an empty store fail here
        return self


def preset_named(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise OptiqError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def cost_per_param(bits: int, group_size: int, scale_bits: int = 16) -> float:
    """Bits one weight costs as mlx-lm counts it: packed bits plus its share of the
    group's scale and bias; ``KEEP`` costs ``scale_bits`` (the unquantized dtype)."""
    if bits == KEEP:
        return float(scale_bits)
    return bits + 2 * scale_bits / group_size


