"""optiq-tui: keep, quantize (OptiQ mixed precision) and chat with local MLX models."""

__version__ = "0.1.0"
