"""Where a model came from: the unquantized source a quant was made from, by its records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from optiq_tui.library.model_files import OPTIQ_QUANT_FILE
from optiq_tui.progress import OptiqError


def find_reference(models: Sequence[Any]) -> Any | None:
    """The unquantized source the models were made from, when provenance says so.

    A model in ``models`` that is the source of the others wins; otherwise the
    source their provenance names, when all that name one agree and it exists.
    """
    sources = {src for src in (source_path(info) for info in models) if src is not None}
    if len(sources) != 1:
        return None
    (source,) = sources
    for info in models:
        if Path(info.path).resolve() == source:
            return info
    from optiq_tui.library.catalog import inspect_model

    return inspect_model(source)


def source_path(info: Any) -> Path | None:
    """The folder of the model ``info`` was made from, or None when unknown or gone.

    The library's model of the recorded source name comes first: a library copied or
    moved to another OPTIQ_HOME keeps its quants' recorded folders, which may still
    exist where it was. Otherwise OptiQ quants' ``optiq_quant.json`` folder is used.
    GGUF imports name a .gguf file, not a model: they are sources themselves.
    """
    from optiq_tui.library.catalog import resolve

    if getattr(info, "quant_kind", None) == "gguf":
        return None
    name = getattr(info, "source_model", None)
    if name:
        try:
            return Path(resolve(name).path).resolve()
        except OptiqError:
            pass
    try:
        folder = Path(json.loads((Path(info.path) / OPTIQ_QUANT_FILE).read_text())["source_path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder.resolve() if (folder / "config.json").exists() else None
