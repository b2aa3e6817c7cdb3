"""The tokenizer life cycle: train a bundle, register it, gate it for promotion, retokenize."""
