"""OpenAI-compatible endpoints: /v1/chat/completions (plain and SSE) and /v1/completions (echo, logprobs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from flaxchat.infer.batcher import Generated, Scores, Stream
from flaxchat.infer.errors import GenerationError
from flaxchat.infer.server.errors import APIError
from flaxchat.infer.server.schemas import ChatCompletionRequest, CompletionRequest
from flaxchat.infer.server.state import Generation, ServerState

router = APIRouter()


def _state(request: Request) -> ServerState:
    return request.app.state.flaxchat


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


@contextlib.asynccontextmanager
async def cancel_on_disconnect(request: Request, stream: Stream):
    """Cancel `stream` (freeing its row at once) if the client disconnects meanwhile."""

    async def watch():
        while (await request.receive())["type"] != "http.disconnect":
            pass
        stream.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


def _error_event(generation: Generation) -> dict:
    message = generation.stream.error or "generation failed"
    return APIError(500, message, type="server_error").body()


# Chat ------------------------------------------------------------------------------------------
def _token_logprob(state: ServerState, token: int, logprob: float) -> dict:
    raw = state.tokenizer.decode_single_token_bytes(token)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}


def _chat_logprobs(state: ServerState, tokens: list[Generated], top_n: int) -> list[dict]:
    return [
        {**_token_logprob(state, g.token, g.logprob),
         "top_logprobs": [_token_logprob(state, i, lp) for i, lp in (g.top or ())[:top_n]]}
        for g in tokens
    ]


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state = _state(request)
    state.check_model(body.model)
    prompt = state.chat_prompt(body.messages)
    # Logprobs describe the model's own samples: such requests run without tool execution.
    stream = state.submit(prompt, max_tokens=body.max_completion_tokens or body.max_tokens,
                          temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, seed=body.seed,
                          logprobs=body.logprobs, tools=state.config.tools and not body.logprobs)
    generation = state.generation(stream, "chat", body.stop_strings())
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.model_name}
    top_n = body.top_logprobs or 0
    if body.stream:
        return StreamingResponse(_chat_events(request, state, generation, head, body.logprobs, top_n),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    text, logprobs = [], []
    async with cancel_on_disconnect(request, stream):
        async for delta in generation.deltas():
            text.append(delta.text)
            logprobs.extend(delta.tokens)
    if generation.finish_reason == "error":
        raise APIError(500, _error_event(generation)["error"]["message"], type="server_error")
    choice = {"index": 0, "message": {"role": "assistant", "content": "".join(text)},
              "logprobs": {"content": _chat_logprobs(state, logprobs, top_n)} if body.logprobs else None,
              "finish_reason": generation.finish_reason}
    return {**head, "object": "chat.completion", "choices": [choice], "usage": generation.usage()}


async def _chat_events(request: Request, state: ServerState, generation: Generation, head: dict, logprobs: bool,
                       top_n: int) -> AsyncIterator[str]:
    chunk = {**head, "object": "chat.completion.chunk"}

    def event(delta: dict, finish_reason=None, tokens=None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason,
                  "logprobs": {"content": _chat_logprobs(state, tokens, top_n)} if logprobs and tokens else None}
        return _sse({**chunk, "choices": [choice]})

    async with cancel_on_disconnect(request, generation.stream):
        yield event({"role": "assistant", "content": ""})
        async for delta in generation.deltas():
            if delta.text or (logprobs and delta.tokens):
                yield event({"content": delta.text}, tokens=delta.tokens)
    if generation.finish_reason == "error":
        yield _sse(_error_event(generation))
    else:
        yield event({}, generation.finish_reason)
        yield _sse({**chunk, "choices": [], "usage": generation.usage()})
    yield _sse("[DONE]")


# Completions -------------------------------------------------------------------------------------
def _completion_prompt(state: ServerState, prompt: str | list[int], i: int, max_tokens: int) -> tuple[list[int], int]:
    """(token ids, how many leading ids are implicit): text is encoded after <|bos|>, as nanochat evaluates.
    Checked before any prompt of the request is submitted."""
    if isinstance(prompt, str):
        ids, implicit = state.tokenizer.encode(prompt, prepend=state.tokenizer.bos_id), 1
    else:
        ids, implicit = list(prompt), 0
    vocab = state.tokenizer.vocab_size
    if any(t >= vocab for t in ids):
        raise APIError(400, f"prompt.{i}: token ids must be below the vocabulary size {vocab}", param="prompt")
    if max_tokens > 0:
        state.budget(len(ids), max_tokens, fit=False, param=f"prompt.{i}")
    return ids, implicit


def _score(state: ServerState, ids: list[int]) -> Scores:
    try:
        return state.scheduler.score(ids)
    except GenerationError as e:
        raise APIError(400, str(e), param="prompt", code="context_length_exceeded") from None


def _completion_logprobs(state: ServerState, tokens: list[int], logprobs: list, tops: list) -> dict:
    """OpenAI's legacy logprobs: tokens, token_logprobs, top_logprobs ({token text: logprob}), text_offset."""
    decode = state.tokenizer.decode_single_token_bytes
    offsets, raw = [], b""
    for token in tokens:
        offsets.append(len(raw.decode("utf-8", errors="replace")))
        raw += decode(token)
    text = [decode(t).decode("utf-8", errors="replace") for t in tokens]
    top = [None if t is None else {decode(i).decode("utf-8", errors="replace"): lp for i, lp in t} for t in tops]
    return {"tokens": text, "token_logprobs": logprobs, "top_logprobs": top, "text_offset": offsets}


async def _completion_choice(request: Request, state: ServerState, body: CompletionRequest, index: int,
                             ids: list[int], implicit: int) -> tuple[dict, int]:
    """One prompt's choice, and how many tokens it generated."""
    echoed = ids[implicit:]
    text = state.tokenizer.decode(echoed) if body.echo else ""
    want = body.logprobs is not None
    tokens, logprobs, tops = [], [], []
    if body.echo and want:
        scores = await run_in_threadpool(_score, state, ids) if len(ids) > 1 else Scores([], [])
        tokens, logprobs = echoed, ([None] * (1 - implicit) + scores.logprobs)[: len(echoed)]
        tops = [None] * (1 - implicit) + [top[: body.logprobs] for top in scores.top]
    finish_reason, generated = "length", []
    if body.max_tokens > 0:
        stream = state.submit(ids, max_tokens=body.max_tokens, temperature=body.temperature, top_k=body.top_k,
                              top_p=body.top_p, seed=body.seed, logprobs=want, fit=False)
        generation = state.generation(stream, "completions", body.stop_strings())
        async with cancel_on_disconnect(request, stream):
            async for delta in generation.deltas():
                text += delta.text
                generated.extend(delta.tokens)
        finish_reason = generation.finish_reason
        if finish_reason == "error":
            raise APIError(500, _error_event(generation)["error"]["message"], type="server_error")
        tokens = [*tokens, *(g.token for g in generated)]
        logprobs = [*logprobs, *(g.logprob for g in generated)]
        tops = [*tops, *((g.top or ())[: body.logprobs] for g in generated)]
    else:
        state.metrics.finished("completions", "length")
    choice = {"index": index, "text": text, "finish_reason": finish_reason,
              "logprobs": _completion_logprobs(state, tokens, logprobs, tops) if want else None}
    return choice, len(generated)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    state = _state(request)
    state.check_model(body.model)
    prompts = [_completion_prompt(state, prompt, i, body.max_tokens) for i, prompt in enumerate(body.prompts())]
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.model_name}
    if body.stream:
        if len(prompts) > 1 or body.echo or body.logprobs is not None:
            raise APIError(400, "stream takes one prompt, without echo or logprobs", param="stream")
        ids, _ = prompts[0]
        stream = state.submit(ids, max_tokens=body.max_tokens, temperature=body.temperature, top_k=body.top_k,
                              top_p=body.top_p, seed=body.seed, fit=False)
        generation = state.generation(stream, "completions", body.stop_strings())
        return StreamingResponse(_completion_events(request, state, generation, head), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    results = await asyncio.gather(*(_completion_choice(request, state, body, i, ids, implicit)
                                     for i, (ids, implicit) in enumerate(prompts)))
    prompt_tokens = sum(len(ids) for ids, _ in prompts)
    completion_tokens = sum(n for _, n in results)
    return {**head, "object": "text_completion", "choices": [choice for choice, _ in results],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


async def _completion_events(request: Request, state: ServerState, generation: Generation, head: dict):
    chunk = {**head, "object": "text_completion"}
    async with cancel_on_disconnect(request, generation.stream):
        async for delta in generation.deltas():
            if delta.text:
                choice = {"index": 0, "text": delta.text, "finish_reason": None, "logprobs": None}
                yield _sse({**chunk, "choices": [choice]})
    if generation.finish_reason == "error":
        yield _sse(_error_event(generation))
    else:
        yield _sse({**chunk, "choices": [{"index": 0, "text": "", "finish_reason": generation.finish_reason,
                                          "logprobs": None}], "usage": generation.usage()})
    yield _sse("[DONE]")
