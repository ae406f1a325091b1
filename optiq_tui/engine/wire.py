"""Typed events to JSON and back, for the remote client.

A dataclass event becomes ``{"type": ClassName, field: value...}``. Decoding
rebuilds the classes of modules that import no MLX (so the UI and the CLI
can follow a job without loading MLX); any other type comes back as a
:class:`WireEvent` holding its fields.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from pathlib import Path
from typing import Any

# Modules whose event classes decode back into themselves: none of them imports MLX.
_MODULES = ("optiq_tui.engine.events", "optiq_tui.progress", "optiq_tui.quant.events")
_classes: dict[str, type] | None = None


@dataclasses.dataclass(frozen=True)
class WireEvent:
    """An event whose class is not rebuilt on this side; ``data`` holds its fields."""

    type: str
    data: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None


def encode(value: Any) -> Any:
    """A JSON-able form of an event (or of anything a result holds)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, WireEvent):
            return {"type": value.type, **value.data}
        out = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = encode(getattr(value, f.name))
        return out
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _registry() -> dict[str, type]:
    global _classes
    if _classes is None:
        _classes = {}
        for name in _MODULES:
            module = importlib.import_module(name)
            for obj in vars(module).values():
                if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == name:
                    _classes[obj.__name__] = obj
    return _classes


def _coerce(hint: Any, value: Any) -> Any:
    if isinstance(value, dict) and "type" in value:
        return decode(value)
    if isinstance(value, dict) and typing.get_origin(hint) is dict:
        key_type = (typing.get_args(hint) or (str,))[0]
        if key_type is int:  # JSON object keys are strings; bit widths are ints
            return {int(k): v for k, v in value.items()}
    return value


def decode(data: dict[str, Any]) -> Any:
    """The event ``encode`` made, rebuilt as its class where that class is MLX-free."""
    fields = {k: v for k, v in data.items() if k != "type"}
    cls = _registry().get(str(data.get("type")))
    if cls is None:
        return WireEvent(str(data.get("type")), {k: _coerce(None, v) for k, v in fields.items()})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _coerce(hints.get(k), v) for k, v in fields.items() if k in known})


def event_type(event: Any) -> str:
    """The class name of an event, whether rebuilt or a :class:`WireEvent`."""
    return event.type if isinstance(event, WireEvent) else type(event).__name__
