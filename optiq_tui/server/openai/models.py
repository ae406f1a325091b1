"""GET /v1/models (the library, with each model's quantization) and choosing a model by name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from openai.types import Model
from starlette.requests import Request
from starlette.responses import JSONResponse

from optiq_tui.progress import OptiqError
from optiq_tui.server.openai.errors import ApiError
from optiq_tui.sizes import human_bytes

if TYPE_CHECKING:
    from optiq_tui.engine.service import EngineService
    from optiq_tui.library.catalog import ModelInfo


def _describe(info: "ModelInfo", loaded: str | None) -> dict:
    created = int(Path(info.path).stat().st_mtime)
    # Model allows extra fields: what an OpenAI client ignores, a person choosing a model reads.
    return Model(id=info.name, created=created, object="model", owned_by="optiq", quantization=info.quant,
                 quant_kind=info.quant_kind, bits_per_weight=round(info.bpw, 2), model_type=info.model_type,
                 chat_format=info.chat_format, context_length=info.context_length,
                 size_bytes=info.size_bytes, loaded=info.name == loaded).model_dump(mode="json")


def list_models_route(service: "EngineService"):
    async def list_models(_request: Request) -> JSONResponse:
        from optiq_tui.library.catalog import scan

        catalog = await anyio.to_thread.run_sync(scan)
        loaded = service.status()["loaded_model"]
        return JSONResponse({"object": "list", "data": [_describe(m, loaded) for m in catalog.models]})

    return list_models


def find_model(name: str) -> "ModelInfo":
    """A library model by name, repo id or ``demo``; a folder path is refused (clients choose from the list)."""
    from optiq_tui.library.catalog import resolve

    if not name or name.startswith(("/", ".", "~")):
        raise ApiError(404, f"no model named {name!r}: choose one of GET /v1/models by its id",
                       param="model", code="model_not_found")
    try:
        return resolve(name)
    except OptiqError as exc:
        raise ApiError(404, str(exc), param="model", code="model_not_found") from None


def check_fits(service: "EngineService", info: "ModelInfo") -> None:
    """503 when the model will not fit, counting the memory the loaded model would give back."""
    from optiq_tui.engine.loader import available_memory, estimate_memory

    loaded = service.ctx.loaded
    if loaded is not None and str(loaded.info.path) == str(info.path):
        return
    need = estimate_memory(info)
    have, source = available_memory()
    freed = loaded.memory_bytes if loaded is not None else 0
    if need > have + freed:
        raise ApiError(503, f"{info.name} needs about {human_bytes(need)} and only {human_bytes(have + freed)} "
                       f"can be made free ({source}); pick a smaller quant", param="model",
                       code="model_too_large")
