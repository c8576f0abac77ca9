"""flaxchat.model."""
