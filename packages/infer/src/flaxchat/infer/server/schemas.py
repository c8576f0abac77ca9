"""Request bodies (OpenAI's, plus top_k) with nanochat's chat_web input limits.

Fields a client may send that this server does not use (user, presence_penalty, ...) are
ignored; settings that change what is generated and are not supported (n > 1) are refused.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# nanochat's chat_web limits.
MAX_MESSAGES = 500
MAX_MESSAGE_CHARS = 8000
MAX_TOTAL_CHARS = 32000
MAX_TEMPERATURE = 2.0
MAX_TOP_K = 200  # 0 = no top-k
MAX_TOKENS = 4096
# OpenAI's limits.
MAX_STOP = 4
MAX_TOP_LOGPROBS = 20  # chat: top_logprobs
MAX_COMPLETION_LOGPROBS = 5  # completions: logprobs
MAX_PROMPTS = 64  # prompts in one completions request

MIN_TEMPERATURE = 1e-4  # smaller positive values overflow the float32 logits / temperature
MIN_TOP_P = 1e-6  # smaller values round to 0 in float32 and would keep no token


def _temperature(value: float | None) -> float | None:
    if value is not None and 0 < value < MIN_TEMPERATURE:
        raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}")
    return value


Temperature = Annotated[float | None, Field(None, ge=0.0, le=MAX_TEMPERATURE, description="0 = greedy"),
                        AfterValidator(_temperature)]
TopK = Annotated[int | None, Field(None, ge=0, le=MAX_TOP_K, description="0 = off")]
TopP = Annotated[float | None, Field(None, ge=MIN_TOP_P, le=1.0)]
Seed = Annotated[int | None, Field(None, ge=0, lt=2**32, description="default: random")]
Stop = Annotated[
    str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP)] | None,
    Field(None, description="generation ends before the first of these strings"),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="the served model's id (GET /v1/models); optional")
    temperature: Temperature = None
    top_k: TopK = None
    top_p: TopP = None
    seed: Seed = None
    stop: Stop = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class Conversation(BaseModel):
    """nanochat's limits on a conversation: 1-500 messages, each 1-8000 characters, 32000 in all."""

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)

    @model_validator(mode="after")
    def _limits(self):
        total = 0
        for i, message in enumerate(self.messages):
            n = len(message.text())
            if n == 0:
                raise ValueError(f"messages.{i}: content must not be empty")
            if n > MAX_MESSAGE_CHARS:
                raise ValueError(f"messages.{i}: content has {n} characters, at most {MAX_MESSAGE_CHARS} are allowed")
            total += n
        if total > MAX_TOTAL_CHARS:
            raise ValueError(f"the conversation has {total} characters, at most {MAX_TOTAL_CHARS} are allowed")
        return self


class ChatCompletionRequest(_Request, Conversation):
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, description="default: the server's")
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, description="alias of max_tokens")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
Prompt = str | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)] | TokenIds | Annotated[
    list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]


class CompletionRequest(_Request):
    prompt: Prompt = Field(description="text (encoded after <|bos|>), token ids, or a list of either")
    max_tokens: int = Field(16, ge=0, le=MAX_TOKENS, description="0 only with echo: score the prompt")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS, description="top alternatives per token")

    @model_validator(mode="after")
    def _limits(self):
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if prompts and isinstance(prompts[0], str):
            total = sum(map(len, prompts))
            if total > MAX_TOTAL_CHARS:
                raise ValueError(f"the prompt has {total} characters, at most {MAX_TOTAL_CHARS} are allowed")
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens 0 is only allowed with echo (scoring the prompt)")
        return self

    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)


class WsGenerate(Conversation):
    """The web UI's request over /ws."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["generate"]
    temperature: Temperature = None
    top_k: TopK = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
