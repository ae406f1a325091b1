"""The OpenAI-compatible face of the engine: the same process, models, jobs and key as its control API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from optiq_tui.engine.service import EngineService


def openai_routes(service: "EngineService") -> list[BaseRoute]:
    """Routes for ``build_app(extra_routes=...)``."""
    from optiq_tui.server.openai.chat_completions import chat_completions_route
    from optiq_tui.server.openai.models import list_models_route
    from optiq_tui.server.openai.responses import responses_route

    return [
        Route("/v1/models", list_models_route(service)),
        Route("/v1/chat/completions", chat_completions_route(service), methods=["POST"]),
        Route("/v1/responses", responses_route(service), methods=["POST"]),
    ]
