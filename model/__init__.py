"""The Transformer translator: architecture, tokenizer, data, decoding, training and evaluation."""
