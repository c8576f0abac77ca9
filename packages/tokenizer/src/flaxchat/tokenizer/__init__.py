"""flaxchat.tokenizer."""
