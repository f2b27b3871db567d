"""Reading parallel text, preparing binary caches, token-count batching, datasets."""
