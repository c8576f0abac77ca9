"""flaxchat.infer."""
