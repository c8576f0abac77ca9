"""Conversation -> token ids and supervision mask, exactly as nanochat's render_conversation."""

from typing import Any


class ConversationError(ValueError):
    """A conversation does not have the shape the chat format needs."""


def _merge_system(messages: list) -> list:
    """A leading system message is folded into the first user message (nanochat has no system token)."""
    if not messages or not isinstance(messages[0], dict) or messages[0].get("role") != "system":
        return messages
    if len(messages) < 2 or not isinstance(messages[1], dict) or messages[1].get("role") != "user":
        raise ConversationError("a system message must be followed by a user message")
    system, user = messages[0].get("content"), messages[1].get("content")
    if not isinstance(system, str) or not isinstance(user, str):
        raise ConversationError("system and user message contents must be strings")
    return [{**messages[1], "content": system + "\n\n" + user}, *messages[2:]]


def _messages(conversation: Any) -> list:
    if not isinstance(conversation, dict) or not isinstance(conversation.get("messages"), list):
        raise ConversationError('a conversation is a dict {"messages": [{"role": ..., "content": ...}, ...]}')
    messages = _merge_system(conversation["messages"])
    if not messages:
        raise ConversationError("a conversation needs at least one message")
    return messages


def render_conversation(tok, conversation: dict, max_tokens: int = 2048) -> tuple[list[int], list[int]]:
    """(ids, mask); mask 1 marks tokens the assistant is trained on. Both truncated to max_tokens."""
    special = tok.encode_special
    ids, mask = [], []

    def add(token_ids: list[int], supervised: int) -> None:
        ids.extend(token_ids)
        mask.extend([supervised] * len(token_ids))

    add([tok.bos_id], 0)
    for i, message in enumerate(_messages(conversation)):
        expected = "user" if i % 2 == 0 else "assistant"
        role = message.get("role") if isinstance(message, dict) else None
        if role != expected:
            raise ConversationError(f"message {i} is from {role!r} but should be from {expected!r} (user and assistant must alternate, user first)")
        content = message.get("content")
        if role == "user":
            if not isinstance(content, str):
                raise ConversationError(f"message {i}: user content must be a string, got {type(content).__name__}")
            add([special("<|user_start|>"), *tok.encode(content), special("<|user_end|>")], 0)
            continue
        add([special("<|assistant_start|>")], 0)
        if isinstance(content, str):
            add(tok.encode(content), 1)
        elif isinstance(content, list):
            for part in content:
                _add_part(tok, part, i, add)
        else:
            raise ConversationError(f"message {i}: assistant content must be a string or a list of parts, got {type(content).__name__}")
        add([special("<|assistant_end|>")], 1)
    return ids[:max_tokens], mask[:max_tokens]


def _add_part(tok, part: Any, i: int, add) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("text"), str):
        raise ConversationError(f'message {i}: each assistant part is a dict {{"type": ..., "text": str}}, got {part!r:.80}')
    ids = tok.encode(part["text"])
    kind = part.get("type")
    if kind == "text":
        add(ids, 1)
    elif kind == "python":  # the tool call is the assistant's own output: supervised
        add([tok.encode_special("<|python_start|>"), *ids, tok.encode_special("<|python_end|>")], 1)
    elif kind == "python_output":  # comes from the interpreter at test time: not supervised
        add([tok.encode_special("<|output_start|>"), *ids, tok.encode_special("<|output_end|>")], 0)
    else:
        raise ConversationError(f"message {i}: unknown part type {kind!r} (expected text, python or python_output)")


def render_for_completion(tok, conversation: dict) -> list[int]:
    """Prompt ids for sampling the final assistant reply: drop that reply, append <|assistant_start|>."""
    messages = _messages(conversation)
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise ConversationError("the last message must be the assistant's (it is replaced by the completion)")
    ids, _ = render_conversation(tok, {**conversation, "messages": messages[:-1]})
    return [*ids, tok.encode_special("<|assistant_start|>")]
