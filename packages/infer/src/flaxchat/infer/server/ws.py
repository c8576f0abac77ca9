"""WebSocket /ws: the web UI's conversation channel.

Client -> server: {"type": "generate", "messages": [...], "temperature", "top_k", "max_tokens"}
(the settings optional) or {"type": "stop"}. Server -> client: {"type": "token", "text"} as the
reply grows, then {"type": "done", "finish_reason", "usage"}; {"type": "error", "message"} for a
request it refuses. "stop" cancels the reply at once (done then says "cancelled"); closing the
socket cancels it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from flaxchat.infer.server.errors import APIError, validation_message
from flaxchat.infer.server.schemas import WsGenerate
from flaxchat.infer.server.state import Generation, ServerState

logger = logging.getLogger(__name__)


async def _reply(socket: WebSocket, generation: Generation) -> None:
    async for delta in generation.deltas():
        if delta.text:
            await socket.send_json({"type": "token", "text": delta.text})
    done = {"type": "done", "finish_reason": generation.finish_reason, "usage": generation.usage()}
    if generation.finish_reason == "error":
        done["error"] = generation.stream.error
    await socket.send_json(done)


def _start(socket: WebSocket, state: ServerState, message: dict) -> asyncio.Task:
    request = WsGenerate.model_validate(message)
    stream = state.submit(state.chat_prompt(request.messages), max_tokens=request.max_tokens,
                          temperature=request.temperature, top_k=request.top_k, tools=state.config.tools)
    return asyncio.create_task(_reply(socket, state.generation(stream, "ws")))


async def chat_socket(socket: WebSocket) -> None:
    state: ServerState = socket.app.state.flaxchat
    await socket.accept()
    reply: asyncio.Task | None = None
    try:
        while True:
            try:
                message = json.loads(await socket.receive_text())
            except json.JSONDecodeError as e:
                await socket.send_json({"type": "error", "message": f"messages are JSON objects: {e}"})
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "stop":
                if reply is not None and not reply.done():
                    reply.cancel()  # its Generation cancels the stream; done is sent below
                    with contextlib.suppress(asyncio.CancelledError):
                        await reply
                    await socket.send_json({"type": "done", "finish_reason": "cancelled"})
                    reply = None
            elif kind != "generate":
                await socket.send_json({"type": "error", "message": 'type must be "generate" or "stop"'})
            elif reply is not None and not reply.done():
                await socket.send_json({"type": "error", "message": "a reply is being generated: send stop first"})
            else:
                try:
                    reply = _start(socket, state, message)
                except ValidationError as e:
                    await socket.send_json({"type": "error", "message": validation_message(e.errors())[0]})
                except APIError as e:
                    await socket.send_json({"type": "error", "message": e.message})
    except WebSocketDisconnect:
        pass
    finally:
        if reply is not None:
            reply.cancel()
