"""Text to ids and numbers: tokenizer backends, features, filter rules."""
