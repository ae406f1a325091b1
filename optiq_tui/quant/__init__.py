"""The OptiQ mixed-precision quantizer (no Textual)."""
