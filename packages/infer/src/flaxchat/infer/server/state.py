"""What every endpoint shares: the scheduler, the tokenizer, defaults, metrics; prompts and generations."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable

from flaxchat.infer.batcher import Generated, Scheduler, SchedulerClosedError, SchedulerConfig, Stream
from flaxchat.infer.errors import GenerationError
from flaxchat.infer.server.errors import APIError
from flaxchat.infer.server.metrics import Metrics
from flaxchat.infer.server.schemas import Message
from flaxchat.infer.server.text import TextAssembler
from flaxchat.model import GPT
from flaxchat.tokenizer import ConversationError, Tokenizer

logger = logging.getLogger(__name__)

RENDER_LIMIT = 2048  # render_for_completion keeps the first 2048 tokens of a conversation (nanochat)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    temperature: float = 0.8  # defaults for requests that do not set them (nanochat's chat_web)
    top_k: int = 50
    max_tokens: int = 512
    tools: bool = True  # chat runs python blocks (calculator / sandbox), as nanochat's Engine
    note: str | None = None  # shown in the log, /v1/models and the UI banner (e.g. "random weights")
    scheduler: SchedulerConfig = SchedulerConfig()


@dataclasses.dataclass(frozen=True)
class Delta:
    text: str
    tokens: list[Generated]  # the tokens this text completes (text may be empty at the end)


class Generation:
    """One request's stream as text deltas; leaving early (a disconnect) cancels it at once.
    on_end(generation) runs when the deltas end, however they end."""

    def __init__(self, stream: Stream, tokenizer: Tokenizer, stop: list[str] | None = None,
                 on_end: Callable[["Generation"], None] | None = None):
        self.stream = stream
        self.text = TextAssembler(tokenizer, stop)
        self.consumed = 0  # tokens turned into text (a stop string ends it before the stream's end)
        self._on_end = on_end

    async def deltas(self) -> AsyncIterator[Delta]:
        tokens: list[Generated] = []
        try:
            async for item in self.stream:
                self.consumed += 1
                tokens.append(item)
                text = self.text.push(item.token)
                if self.text.stopped:
                    self.stream.cancel()
                    yield Delta(text, tokens)
                    return
                if text:
                    yield Delta(text, tokens)
                    tokens = []
            text = self.text.flush()
            if text or tokens:
                yield Delta(text, tokens)
        finally:
            self.stream.cancel()  # a no-op once finished; frees the row when the client went away
            if self._on_end is not None:
                self._on_end(self)

    @property
    def finish_reason(self) -> str:
        """OpenAI's: "stop" (a stop token or string), "length", or ours: "cancelled", "error"."""
        return "stop" if self.text.stopped else self.stream.finish_reason or "cancelled"

    def usage(self) -> dict:
        prompt, completion = self.stream.prompt_tokens, self.consumed
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ServerState:
    def __init__(self, model: GPT, tokenizer: Tokenizer, model_name: str, config: ServerConfig):
        self.tokenizer, self.model_name, self.config = tokenizer, model_name, config
        self.scheduler = Scheduler(model, tokenizer, config.scheduler)
        self.metrics = Metrics(self.scheduler.stats)
        self.created = int(time.time())

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(404, f"model {name!r} is not served here; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")

    def chat_prompt(self, messages: list[Message]) -> list[int]:
        """Token ids of the conversation, ending with <|assistant_start|> (tokenizer.render_for_completion)."""
        if messages[-1].role != "user":
            raise APIError(400, "the last message must be the user's: the reply to it is generated", param="messages")
        conversation = {"messages": [{"role": m.role, "content": m.text()} for m in messages]}
        conversation["messages"].append({"role": "assistant", "content": ""})
        try:
            prompt = self.tokenizer.render_for_completion(conversation)
        except ConversationError as e:
            raise APIError(400, str(e), param="messages") from None
        if len(prompt) > RENDER_LIMIT:
            raise APIError(400, f"the conversation is longer than {RENDER_LIMIT} tokens: start a new one or shorten it",
                           param="messages", code="context_length_exceeded")
        return prompt

    def budget(self, prompt_tokens: int, max_tokens: int | None, *, fit: bool, param: str = "prompt") -> int:
        """Tokens to generate after a prompt: max_tokens (default: the server's), shortened to what the
        context leaves when `fit` (a chat reply), else refused if it does not fit."""
        room = self.scheduler.cache_len - prompt_tokens
        wanted = self.config.max_tokens if max_tokens is None else max_tokens
        if room < 1 or (not fit and wanted > room):
            raise APIError(400, f"{param} is {prompt_tokens} tokens and max_tokens {wanted}: this server's context "
                                f"holds {self.scheduler.cache_len} tokens (prompt + generation); shorten the prompt or "
                                "lower max_tokens", param="max_tokens" if room >= 1 else param,
                           code="context_length_exceeded")
        return min(wanted, room)

    def submit(self, prompt: list[int], *, max_tokens: int | None, temperature: float | None, top_k: int | None,
               top_p: float | None = None, seed: int | None = None, logprobs: bool = False, tools: bool = False,
               fit: bool = True) -> Stream:
        """Queue a generation of budget(...) tokens, with the server's defaults for unset settings."""
        try:
            return self.scheduler.submit(
                prompt, self.budget(len(prompt), max_tokens, fit=fit),
                temperature=self.config.temperature if temperature is None else temperature,
                top_k=self.config.top_k if top_k is None else top_k, top_p=top_p,
                seed=random.randrange(2**32) if seed is None else seed, logprobs=logprobs, tools=tools,
            )
        except GenerationError as e:
            raise APIError(400, str(e)) from None
        except SchedulerClosedError as e:
            raise APIError(503, str(e), type="server_error", code="unavailable") from None

    def generation(self, stream: Stream, endpoint: str, stop: list[str] | None = None) -> Generation:
        """`stream` as text, counted in the metrics and logged under `endpoint` when it ends."""
        return Generation(stream, self.tokenizer, stop, on_end=lambda generation: self._log(endpoint, generation))

    def _log(self, endpoint: str, generation: Generation) -> None:
        stream = generation.stream
        self.metrics.finished(endpoint, generation.finish_reason, stream)
        ttft = f"{stream.ttft * 1e3:.0f} ms" if stream.ttft is not None else "-"
        logger.info("%s: %d prompt + %d generated tokens, first token after %s, %s", endpoint, stream.prompt_tokens,
                    stream.completion_tokens, ttft, generation.finish_reason)
