"""HTTP faces of the engine: its control API (and, next, the OpenAI API)."""
