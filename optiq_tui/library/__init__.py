"""What models exist, where, and what they are (no Textual)."""
