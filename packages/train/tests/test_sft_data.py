"""SFT batches: the loss covers exactly the assistant's tokens; packing and bookkeeping are nanochat's."""

import itertools

import numpy as np
import pytest
from flaxchat.tokenizer import Tokenizer
from flaxchat.tokenizer.spec import nanochat_spec
from flaxchat.train.sft_data import ConversationBatches, SFTDataError

TOKENIZER = Tokenizer(nanochat_spec({bytes([i]): i for i in range(256)}))  # bytes are their own ids
S = TOKENIZER.encode_special

TOOL_CONVERSATION = {"messages": [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "x"},
        {"type": "python", "text": "1+1"},
        {"type": "python_output", "text": "2"},
        {"type": "text", "text": "ok"},
    ]},
    {"role": "user", "content": "y"},
    {"role": "assistant", "content": "z"},
]}


def _conversation(i: int) -> dict:
    """Conversations of many lengths (8 .. 60 tokens)."""
    return {"messages": [{"role": "user", "content": "q" * (1 + i % 7)},
                         {"role": "assistant", "content": "a" * (1 + (i * 5) % 47)}]}


def test_targets_are_exactly_the_assistant_tokens_including_tool_calls():
    # Hand-written: which tokens the assistant produces (1) and which it is given (0).
    tokens = [
        (S("<|bos|>"), 0), (S("<|user_start|>"), 0), (ord("h"), 0), (ord("i"), 0), (S("<|user_end|>"), 0),
        (S("<|assistant_start|>"), 0), (ord("x"), 1),
        (S("<|python_start|>"), 1), (ord("1"), 1), (ord("+"), 1), (ord("1"), 1), (S("<|python_end|>"), 1),
        (S("<|output_start|>"), 0), (ord("2"), 0), (S("<|output_end|>"), 0),  # the tool's output: given
        (ord("o"), 1), (ord("k"), 1), (S("<|assistant_end|>"), 1),
        (S("<|user_start|>"), 0), (ord("y"), 0), (S("<|user_end|>"), 0),
        (S("<|assistant_start|>"), 0), (ord("z"), 1), (S("<|assistant_end|>"), 1),
    ]
    ids = [t for t, _ in tokens]
    expected_targets = [t if supervised else -1 for t, supervised in tokens[1:]]
    seq_len = 40  # longer than the conversation: the rest of the row is padding
    inputs, targets = next(ConversationBatches([TOOL_CONVERSATION], TOKENIZER, rows=1, seq_len=seq_len, buffer_size=1))
    n = len(ids)
    assert inputs.shape == targets.shape == (1, seq_len) and inputs.dtype == targets.dtype == np.int32
    assert inputs[0, :n].tolist() == ids
    assert targets[0, : n - 1].tolist() == expected_targets
    assert (inputs[0, n:] == S("<|bos|>")).all() and (targets[0, n - 1 :] == -1).all()  # padding: no loss


def test_batches_equal_nanochat_generator(reference_padded):
    """Rows, masks and targets over several batches equal nanochat's best-fit-pad packer (buffer 100)."""
    task = [_conversation(i) for i in range(150)]
    rows, seq_len, batches = 4, 64, 12
    data = ConversationBatches(task, TOKENIZER, rows=rows, seq_len=seq_len)
    mine = [next(data) for _ in range(batches)]
    rendered = (TOKENIZER.render_conversation(c) for c in itertools.cycle(task))
    bos = S("<|bos|>")
    out, masks, lengths, _ = reference_padded(rendered, rows * batches, seq_len + 1, 100, bos)
    for b, (inputs, targets) in enumerate(mine):
        for r in range(rows):
            row, mask, length = out[b * rows + r], masks[b * rows + r], lengths[b * rows + r]
            expected = [t if m else -1 for t, m in zip(row[1:], mask[1:])]
            if length < seq_len + 1:
                expected[length - 1 :] = [-1] * (seq_len + 1 - length)  # nanochat masks padded rows' tail again
            assert inputs[r].tolist() == row[:-1]
            assert targets[r].tolist() == expected


def test_consumption_epochs_and_process_striding():
    # 10 conversations of 10 tokens; rows of 30 hold 3. Process 1 of 2 reads 1, 3, 5, 7, 9, 1, ...
    task = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": str(i) * 4}]}
            for i in range(10)]
    data = ConversationBatches(task, TOKENIZER, rows=1, seq_len=29, process_index=1, process_count=2, buffer_size=2)
    assert data.consumed == 1 and data.progress() == 0.1  # nanochat counts from the process index
    inputs, _ = next(data)
    assert [chr(t) for t in inputs[0, 6::10]] == ["1", "3", "5"]  # the first assistant token of each conversation
    assert data.consumed == 1 + 2 * 3 and data.progress(epochs=2) == pytest.approx(7 / 20) and data.epoch == 1
    inputs, _ = next(data)  # reading 9 wraps the cursor around: epoch 2
    assert [chr(t) for t in inputs[0, 6::10]] == ["7", "9", "1"]
    assert data.consumed == 13 and data.epoch == 2


def test_long_conversations_are_truncated_to_the_row_and_bad_input_fails():
    long = {"messages": [{"role": "user", "content": "u" * 100}, {"role": "assistant", "content": "a" * 100}]}
    inputs, targets = next(ConversationBatches([long], TOKENIZER, rows=2, seq_len=31, buffer_size=1))
    assert inputs.shape == (2, 31) and (inputs[:, 0] == S("<|bos|>")).all()
    assert (targets == -1).all()  # the truncated rows hold only the user's turn
    with pytest.raises(SFTDataError, match="empty"):
        ConversationBatches([], TOKENIZER, rows=1, seq_len=8)
    with pytest.raises(SFTDataError, match="positive"):
        ConversationBatches([long], TOKENIZER, rows=0, seq_len=8)
