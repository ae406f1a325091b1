"""Quality measurements: KL, perplexity, agreement, retrieval probes (no Textual)."""
