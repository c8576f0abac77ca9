"""flaxchat.train."""
