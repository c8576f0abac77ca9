"""render_conversation / render_for_completion against hand-built expectations (nanochat's format)."""

import copy

import pytest

from flaxchat.tokenizer import ConversationError


def specials(tok):
    names = ["user_start", "user_end", "assistant_start", "assistant_end", "python_start", "python_end", "output_start", "output_end"]
    return {n: tok.encode_special(f"<|{n}|>") for n in names}


def test_plain_multi_turn(tok):
    s, enc = specials(tok), tok.encode
    conversation = {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "later"},
    ]}
    expected_ids = (
        [tok.bos_id]
        + [s["user_start"]] + enc("hi") + [s["user_end"]]
        + [s["assistant_start"]] + enc("hello!") + [s["assistant_end"]]
        + [s["user_start"]] + enc("bye") + [s["user_end"]]
        + [s["assistant_start"]] + enc("later") + [s["assistant_end"]]
    )
    expected_mask = (
        [0]
        + [0] * (len(enc("hi")) + 2)
        + [0] + [1] * len(enc("hello!")) + [1]
        + [0] * (len(enc("bye")) + 2)
        + [0] + [1] * len(enc("later")) + [1]
    )
    assert tok.render_conversation(conversation) == (expected_ids, expected_mask)


def test_system_message_merged_into_first_user(tok):
    with_system = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]}
    before = copy.deepcopy(with_system)
    manual = {"messages": [{"role": "user", "content": "be brief\n\nhi"}, {"role": "assistant", "content": "yo"}]}
    assert tok.render_conversation(with_system) == tok.render_conversation(manual)
    assert with_system == before  # the caller's conversation is not modified


def test_tool_parts(tok):
    s, enc = specials(tok), tok.encode
    conversation = {"messages": [
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "sure"},
            {"type": "python", "text": "1+1"},
            {"type": "python_output", "text": "2"},
            {"type": "text", "text": "it is 2"},
        ]},
    ]}
    expected = [
        ([tok.bos_id, s["user_start"], *enc("add"), s["user_end"], s["assistant_start"]], 0),
        (enc("sure"), 1),
        ([s["python_start"], *enc("1+1"), s["python_end"]], 1),  # the tool call is supervised
        ([s["output_start"], *enc("2"), s["output_end"]], 0),  # the interpreter output is not
        ([*enc("it is 2"), s["assistant_end"]], 1),
    ]
    expected_ids = [i for ids, _ in expected for i in ids]
    expected_mask = [m for ids, m in expected for _ in ids]
    assert tok.render_conversation(conversation) == (expected_ids, expected_mask)


def test_truncation(tok):
    conversation = {"messages": [{"role": "user", "content": "hello " * 100}, {"role": "assistant", "content": "world " * 100}]}
    full_ids, full_mask = tok.render_conversation(conversation, max_tokens=10_000)
    ids, mask = tok.render_conversation(conversation, max_tokens=32)
    assert len(full_ids) > 32
    assert (ids, mask) == (full_ids[:32], full_mask[:32])


def test_render_for_completion(tok):
    s, enc = specials(tok), tok.encode
    conversation = {"messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "this gets stripped"},
    ]}
    ids = tok.render_for_completion(conversation)
    assert ids == [tok.bos_id, s["user_start"], *enc("sys\n\nhi"), s["user_end"], s["assistant_start"]]
    assert len(conversation["messages"]) == 3


@pytest.mark.parametrize("conversation, message", [
    ([{"role": "user", "content": "hi"}], "is a dict"),
    ({"messages": []}, "at least one message"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "should be from 'user'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "should be from 'assistant'"),
    ({"messages": [{"role": "system", "content": "s"}]}, "followed by a user message"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "x"}]}, "followed by a user message"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, "user content must be a string"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]}, "string or a list of parts"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "bash", "text": "ls"}]}]}, "unknown part type"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ["plain"]}]}, "each assistant part"),
])
def test_malformed_conversations(tok, conversation, message):
    with pytest.raises(ConversationError, match=message) as info:
        tok.render_conversation(conversation)
    assert isinstance(info.value, ValueError)


def test_render_for_completion_needs_final_assistant(tok):
    with pytest.raises(ConversationError, match="last message must be the assistant"):
        tok.render_for_completion({"messages": [{"role": "user", "content": "hi"}]})
