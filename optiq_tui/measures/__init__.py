"""Quality measures shared by the quantizer (verify, measure) and eval: KL and perplexity math,
the held-out text, the greedy flip prompts and the receipts line a card or report carries."""
