"""The FastAPI app: web UI, WebSocket chat, OpenAI-compatible API, health and metrics over one Scheduler."""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from flaxchat.infer.server import openai_api, schemas
from flaxchat.infer.server.errors import install_error_handlers
from flaxchat.infer.server.metrics import CONTENT_TYPE
from flaxchat.infer.server.state import ServerConfig, ServerState
from flaxchat.infer.server.ws import chat_socket
from flaxchat.model import GPT
from flaxchat.tokenizer import Tokenizer

logger = logging.getLogger(__name__)
CONFIG_SLOT = "/*FLAXCHAT_CONFIG*/{}"  # where the page receives its settings


def _page(state: ServerState) -> str:
    html = importlib.resources.files("flaxchat.infer.server").joinpath("ui.html").read_text(encoding="utf-8")
    settings = {
        "model": state.model_name, "note": state.config.note, "context": state.scheduler.cache_len,
        "defaults": {"temperature": state.config.temperature, "top_k": state.config.top_k,
                     "max_tokens": state.config.max_tokens},
        "limits": {"temperature": schemas.MAX_TEMPERATURE, "top_k": schemas.MAX_TOP_K,
                   "max_tokens": schemas.MAX_TOKENS, "message_chars": schemas.MAX_MESSAGE_CHARS},
    }
    return html.replace(CONFIG_SLOT, json.dumps(settings).replace("</", "<\\/"))


def create_app(model: GPT, tokenizer: Tokenizer, model_name: str, config: ServerConfig = ServerConfig()) -> FastAPI:
    """The server for `model`; its scheduler starts (and warms up) with the app, /health says when it is ready."""
    state = ServerState(model, tokenizer, model_name, config)
    page = _page(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if config.note:
            logger.warning("serving %s: %s", model_name, config.note)
        state.scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(state.scheduler.close)

    app = FastAPI(title="flaxchat", summary="nanochat-style chat server with an OpenAI-compatible API",
                  lifespan=lifespan)
    app.state.flaxchat = state
    install_error_handlers(app, lambda status: state.metrics.rejected.labels(str(status)).inc())
    app.include_router(openai_api.router)
    app.add_api_websocket_route("/ws", chat_socket)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return page

    @app.get("/health")
    def health():
        scheduler = state.scheduler
        body = {"status": "ok" if scheduler.ready else "warming up", "ready": scheduler.ready, "model": model_name}
        if scheduler.error is not None:
            body["status"] = f"failed: {scheduler.error!r}"
        return JSONResponse(body, status_code=200 if scheduler.ready else 503)

    @app.get("/v1/models")
    def models():
        card = {"id": model_name, "object": "model", "created": state.created, "owned_by": "flaxchat",
                "context_length": state.scheduler.cache_len, "note": config.note}
        return {"object": "list", "data": [card]}

    @app.get("/metrics")
    def metrics():
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return app
