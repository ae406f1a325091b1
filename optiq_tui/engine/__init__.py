"""Loading and running models: chat formats, generation sessions, stats (no Textual)."""
