"""flaxchat.evals."""
