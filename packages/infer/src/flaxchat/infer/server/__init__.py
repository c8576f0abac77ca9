"""flaxchat's chat server: continuous batching behind a web UI and an OpenAI-compatible API."""

from flaxchat.infer.server.app import create_app
from flaxchat.infer.server.background import serve_in_background
from flaxchat.infer.server.state import ServerConfig

__all__ = ["ServerConfig", "create_app", "serve_in_background"]
