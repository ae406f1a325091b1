"""The quantize form: settings, live predicted size, validation, then the progress view."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, SelectionList, Static

from optiq_tui.ui.format import human_bytes
from optiq_tui.ui.widgets.conversation_picker import ConversationPicker
from optiq_tui.ui.widgets.plan_panel import FitIn

if TYPE_CHECKING:
    from optiq_tui.library.catalog import ModelInfo
    from optiq_tui.quant.config import QuantConfig

# The form's preset choices: the quantizer's named recipes plus the uniform baseline.
UNIFORM_4 = "uniform 4-bit"


def parse_bits(text: str) -> tuple[int, ...]:
    """'4, 8' -> (4, 8); ValueError with a readable message otherwise."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise ValueError("give at least one bit width, e.g. 4,8")
    try:
        return tuple(sorted({int(p) for p in parts}))
    except ValueError:
        raise ValueError(f"bit widths must be whole numbers, got {text!r}") from None


def _budget_problems(config: QuantConfig) -> list[str]:
    """A target no mix of the candidate widths can reach (widths cost their scales too)."""
    from optiq_tui.quant.config import cost_per_param

    widths = config.widths
    low, high = cost_per_param(widths[0], config.group_size), cost_per_param(widths[-1], config.group_size)
    target = config.target_bpw
    if target < low:
        return [f"Target {target:g} is below the smallest width: {widths[0]}-bit costs {low:.2f} bits/weight"]
    if target > high:
        return [f"Target {target:g} is above the largest width: all {widths[-1]}-bit costs {high:.2f} bits/weight"]
    return []


def _short(title: str, width: int = 24) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


def _field_of(message: str) -> str:
    """The form field a QuantConfig.validate message is about (it raises plain OptiqErrors)."""
    for words, field in (("conversation", "conversations"), ("bit width", "bits"), ("calibration", "calibration"),
                         ("--refine", "refine")):
        if words in message:
            return field
    return "target"


def default_name(info: ModelInfo, config: QuantConfig) -> str:
    if config.uniform_bits:
        return f"{info.name}-{config.uniform_bits}bit"
    return f"{info.name}-optiq-{config.target_bpw:g}bpw"


class QuantizeScreen(Screen):
    """Pick the settings for quantizing ``info``; ctrl+s starts, esc goes back."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("ctrl+s", "start", "Start", priority=True),
    ]

    def __init__(self, info: ModelInfo) -> None:
        super().__init__()
        self.info = info
        # The output name follows the settings until the user types one.
        self._name_edited = False
        self._auto_name = ""
        self.bad_fields: set[str] = set()  # marked invalid (see build_config)
        # Saved conversations, read once: the picker offers them for calibration.
        from optiq_tui.engine.conversations import ConversationStore

        self.saved = ConversationStore().list()

    def compose(self) -> ComposeResult:
        from optiq_tui.quant.config import DEFAULT_PRESET, PRESETS, SUPPORTED_GROUPS

        settings = self.app.settings
        choices = [(name, name) for name in PRESETS] + [(UNIFORM_4, UNIFORM_4)]
        group = settings.group_size if settings.group_size in SUPPORTED_GROUPS else 64
        yield Header()
        with VerticalScroll(id="quant-form"):
            yield Static(Text.assemble(("Source  ", "bold"), self._source_line()), id="quant-source")
            with Grid(classes="form-grid"):
                yield Label("Preset")
                yield Select(choices, value=DEFAULT_PRESET, allow_blank=False, id="preset", compact=True)
                yield Label("")
                yield Static("", id="preset-help", classes="form-hint")
                yield Label("Target bits/weight", classes="budget")
                yield Input(f"{settings.target_bpw:g}", id="target", compact=True, classes="budget")
                yield Label("Candidate bits", classes="budget")
                yield Input(",".join(str(b) for b in settings.candidate_bits), id="bits", compact=True, classes="budget")
                yield Label("Group size")
                groups = [(str(g), g) for g in SUPPORTED_GROUPS]
                yield Select(groups, value=group, allow_blank=False, id="group", compact=True)
            yield FitIn(str(self.info.path), group, id="fit-in", classes="form-grid")
            with Grid(classes="form-grid"):
                yield Label("Calibration")
                yield Input(
                    placeholder="built-in (prose, code, math, chat), or a text file", id="calibration", compact=True
                )
                yield Label("+ conversations")
                if self.saved:
                    yield ConversationPicker(self.saved, id="conversations", compact=True)
                else:
                    yield Static("none saved yet (chat first to calibrate on your own turns)", classes="form-hint")
                yield Label("Refine minutes")
                yield Input(placeholder="off; minutes of tuning against the source (DWQ-style)",
                            id="refine", compact=True)
                yield Label("Output name")
                yield Input(id="name", compact=True)
                if self.info.bit_histogram:
                    yield Label("Source is quantized")
                    yield Checkbox("dequantize it first (the result cannot beat it)", id="dequantize", compact=True)
            yield Static("", id="prediction")
            yield Static("", id="quant-errors", classes="validation")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start (ctrl+s)", variant="primary", id="start")
                yield Button("Back (esc)", id="back")
        yield Footer()

    def _source_line(self) -> str:
        info = self.info
        return f"{info.name} · {info.quant} · {info.bpw:.2f} bpw · {human_bytes(info.size_bytes)}"

    def on_mount(self) -> None:
        self.sub_title = f"quantize {self.info.name}"
        self.query_one("#prediction").border_title = "Predicted size"
        self._update()
        self.query_one("#target", Input).focus()

    # -- form state ------------------------------------------------------------

    def _apply_preset(self, preset: str) -> None:
        """Fill the fields from a preset; the uniform baseline has no budget or widths to pick."""
        from optiq_tui.quant.config import PRESETS

        uniform = preset == UNIFORM_4
        if not uniform:
            p = PRESETS[preset]
            self.query_one("#target", Input).value = f"{p.target_bpw:g}"
            self.query_one("#bits", Input).value = ",".join(str(b) for b in p.bits)
            self.query_one("#group", Select).value = p.group_size
        # The uniform baseline has no budget: its rows go rather than show values that do not apply.
        for widget in self.query(".budget"):
            widget.display = not uniform
        self.query_one("#target", Input).disabled = uniform
        self.query_one("#bits", Input).disabled = uniform
        fit = self.query_one(FitIn)
        if not uniform and fit.plan is not None:
            self.query_one("#target", Input).value = f"{self._reachable(fit.plan['target_bpw']):.2f}"
        help_text = "every layer 4-bit: the baseline OptiQ is measured against"
        self.query_one("#preset-help", Static).update(help_text if uniform else PRESETS[preset].description)
        self._update()

    def build_config(self) -> tuple[QuantConfig | None, list[str]]:
        """The config the form describes, or None and what is wrong with it."""
        from optiq_tui.progress import OptiqError
        from optiq_tui.quant.config import QuantConfig

        errors: list[str] = []
        # Fields to mark invalid; every problem is listed at once, none hides another.
        self.bad_fields: set[str] = set()
        preset = str(self.query_one("#preset", Select).value)
        group = int(self.query_one("#group", Select).value)  # type: ignore[arg-type]
        calibration_text = self.query_one("#calibration", Input).value.strip()
        calibration = Path(calibration_text).expanduser() if calibration_text else None
        if calibration is not None and not calibration.is_file():
            errors.append(f"Calibration file {calibration} does not exist")
            self.bad_fields.add("calibration")
        name = self.query_one("#name", Input).value.strip() or None
        refine_text = self.query_one("#refine", Input).value.strip()
        refine: float | None = None
        try:
            refine = float(refine_text) if refine_text else None
        except ValueError:
            errors.append("Refine minutes must be a number, e.g. 5, or empty for none")
            self.bad_fields.add("refine")
        if preset == UNIFORM_4:
            config = QuantConfig(uniform_bits=4, target_bpw=4.0, bits=(4,), group_size=group, name=name)
        else:
            target: float | None = None
            bits: tuple[int, ...] | None = None
            try:
                target = float(self.query_one("#target", Input).value)
            except ValueError:
                errors.append("Target bits/weight must be a number, e.g. 5.0")
                self.bad_fields.add("target")
            try:
                bits = parse_bits(self.query_one("#bits", Input).value)
            except ValueError as exc:
                errors.append(f"Candidate bits: {exc}")
                self.bad_fields.add("bits")
            # With a field unreadable, the preset's value stands in so the other checks still run.
            config = QuantConfig.from_preset(preset, group_size=group, name=name)
            config = replace(config, target_bpw=config.target_bpw if target is None else target,
                             bits=config.bits if bits is None else bits)
            if target is not None and bits is not None:
                budget = _budget_problems(config)
                errors += budget
                if budget:
                    self.bad_fields.add("target")
        dequantize = bool(self.info.bit_histogram) and self.query_one("#dequantize", Checkbox).value
        if self.info.bit_histogram and not dequantize:
            errors.append(
                f"{self.info.name} is already quantized ({self.info.quant}); quantizing it again compounds "
                "the rounding errors. Pick its unquantized source, or tick 'dequantize it first'."
            )
        config = replace(config, calibration=calibration, dequantize=dequantize,
                         kv_bits=self.query_one(FitIn).kv_bits, conversations=self._picked(),
                         refine_minutes=refine)
        try:
            config.validate()
        except OptiqError as exc:
            if str(exc) not in " ".join(errors):
                errors.append(str(exc))
                self.bad_fields.add(_field_of(str(exc)))
        if name:
            named = self._name_problems(name)
            errors += named
            if named:
                self.bad_fields.add("name")
        return (None if errors else config), errors

    def _free_name(self, name: str) -> str:
        """``name``, or ``name-2``, ``-3``... when the library already has it."""
        from optiq_tui.library.staging import safe_name
        from optiq_tui.settings import paths

        models = paths().models
        candidate, n = name, 1
        while (models / safe_name(candidate)).exists():
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def _name_problems(self, name: str) -> list[str]:
        from optiq_tui.library.staging import safe_name
        from optiq_tui.progress import OptiqError
        from optiq_tui.settings import paths

        try:
            folder = safe_name(name)
        except OptiqError as exc:
            return [str(exc)]
        if (paths().models / folder).exists():
            return [f"A model named {folder!r} is already in the library; pick another name"]
        return []

    def _update(self) -> None:
        from optiq_tui.quant.predict import predict_size

        config, errors = self.build_config()
        name_input = self.query_one("#name", Input)
        if config is not None and not self._name_edited:
            auto = self._free_name(default_name(self.info, config))
            if name_input.value != auto:
                self._auto_name = auto
                name_input.value = auto
                config, errors = self.build_config()
        prediction = self.query_one("#prediction", Static)
        if config is None:
            prediction.update(Text("fix the settings marked below first", style="italic"))
        else:
            size = predict_size(self.info, config)
            share = f" ({size.disk_bytes / self.info.size_bytes:.0%} of the source)" if self.info.size_bytes else ""
            prediction.update(
                Text.assemble(
                    ("bits/weight  ", "bold"), f"{size.bpw:.2f}\n",
                    ("on disk      ", "bold"), f"{human_bytes(size.disk_bytes)}{share}\n",
                    ("in memory    ", "bold"), human_bytes(size.memory_bytes),
                )
            )
        self.query_one("#quant-errors", Static).update("\n".join(errors))
        for field in ("target", "bits", "calibration", "name", "conversations", "refine"):
            for widget in self.query(f"#{field}"):
                widget.set_class(field in self.bad_fields, "-invalid")
        self.query_one("#start", Button).disabled = config is None

    @on(Select.Changed, "#preset")
    def _preset_changed(self, event: Select.Changed) -> None:
        self._apply_preset(str(event.value))

    @on(Select.Changed, "#group")
    def _group_changed(self, event: Select.Changed) -> None:
        self.query_one(FitIn).set_group_size(int(event.value))  # type: ignore[arg-type]
        self._update()

    @on(Checkbox.Changed)
    @on(SelectionList.SelectedChanged)
    @on(Input.Changed, "#target, #bits, #calibration, #refine")
    def _changed(self) -> None:
        self._update()

    @on(FitIn.Planned)
    def _planned(self, event: FitIn.Planned) -> None:
        """A new plan sets the target (the user can still edit it); no plan leaves it as it is."""
        if event.plan is not None and str(self.query_one("#preset", Select).value) != UNIFORM_4:
            self.query_one("#target", Input).value = f"{self._reachable(event.plan['target_bpw']):.2f}"
        self._update()

    def _reachable(self, planned: float) -> float:
        """The planned bpw, capped at what the candidate widths can spend (a source that fits
        unquantized plans its own bpw); a plan below the widths is left for validation to name."""
        from optiq_tui.quant.config import QuantConfig, cost_per_param

        try:
            bits = parse_bits(self.query_one("#bits", Input).value)
        except ValueError:
            return planned
        group = int(self.query_one("#group", Select).value)  # type: ignore[arg-type]
        widths = QuantConfig.from_preset(str(self.query_one("#preset", Select).value), bits=bits).widths
        return min(planned, cost_per_param(widths[-1], group))

    def _picked(self) -> tuple[str, ...]:
        """Ticked conversations, in the list's order (most recent first)."""
        picker = self.query(ConversationPicker)
        if not picker:
            return ()
        ticked = set(picker.first().selected)
        return tuple(i for i in picker.first().summaries if i in ticked)

    @on(Input.Changed, "#name")
    def _name_changed(self, event: Input.Changed) -> None:
        if event.value != self._auto_name:
            self._name_edited = True
            self._update()

    def _ready_config(self) -> QuantConfig | None:
        config, errors = self.build_config()
        if config is None:
            self.notify("; ".join(errors), severity="error")
            # At 80x24 the list sits below the fold, under the planner and conversations.
            self.query_one("#quant-errors").scroll_visible(animate=False)
            return None
        return config if config.name else replace(config, name=default_name(self.info, config))

    @on(Input.Submitted)
    def _review(self) -> None:
        """Enter in a field: a quantize takes minutes to hours, so show what will run and ask first."""
        from optiq_tui.ui.screens.modals import ConfirmModal

        config = self._ready_config()
        if config is None:
            return

        def answered(start: bool | None) -> None:
            if start:
                self._start(config)

        review = ConfirmModal("Start this quantize?", self._review_text(config), yes="Start", no="Back to the form")
        self.app.push_screen(review, answered)

    def _review_text(self, config: QuantConfig) -> str:
        from optiq_tui.quant.predict import predict_size

        size = predict_size(self.info, config)
        if config.uniform_bits:
            recipe = f"uniform {config.uniform_bits}-bit, group {config.group_size}"
        else:
            widths = "/".join(str(b) for b in config.bits or ())
            recipe = f"{config.preset}: {config.target_bpw:g} bits/weight from {widths}-bit, group {config.group_size}"
        calibration = str(config.calibration) if config.calibration else "built-in texts"
        if config.conversations:
            # Two titles at most: the review must fit a 24-row terminal with its buttons.
            titles = [f"“{_short(t)}”" for t in self.query_one(ConversationPicker).picked_titles()]
            n = len(titles)
            more = f" and {n - 2} more" if n > 2 else ""
            calibration += f" + {n} saved conversation{'' if n == 1 else 's'}: {', '.join(titles[:2])}{more}"
        lines = [f"{self.info.name} → {config.name}", recipe, f"calibration: {calibration}",
                 f"predicted: {human_bytes(size.disk_bytes)} on disk"]
        plan = self.query_one(FitIn).review_line()
        if plan:
            lines.append(plan)
        if config.kv_bits:
            lines.append(f"KV cache: {config.kv_bits}-bit (recorded; chat and serve use it)")
        if config.refine_minutes:
            lines.append(f"then refine up to {config.refine_minutes:g} min against the source's logits")
        return "\n".join(lines) + "\n\nEsc on the progress view cancels; nothing half-made is kept."

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        config = self._ready_config()
        if config is not None:
            self._start(config)

    def _start(self, config: QuantConfig) -> None:
        from optiq_tui.ui.screens.quantize_progress import QuantizeProgressScreen

        self.app.switch_screen(QuantizeProgressScreen(self.info, config))

    @on(Button.Pressed, "#back")
    def _back(self) -> None:
        self.app.pop_screen()
