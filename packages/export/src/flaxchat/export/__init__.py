"""flaxchat.export."""
