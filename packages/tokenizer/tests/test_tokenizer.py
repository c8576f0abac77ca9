"""Training, encoding, ids and the split pattern."""

import sys

import numpy as np
import pytest
import regex

from flaxchat.tokenizer import MIN_VOCAB_SIZE, SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer, TokenizerTrainingError

N_MERGES = 35  # the `tok` fixture (conftest.py) asks for 256 + 9 + 35 tokens
VOCAB_SIZE = 256 + 9 + N_MERGES


def test_vocab_size_and_id_layout(tok):
    assert tok.vocab_size == VOCAB_SIZE
    n_ordinary = 256 + N_MERGES
    assert [tok.encode_special(s) for s in SPECIAL_TOKENS] == list(range(n_ordinary, VOCAB_SIZE))
    assert tok.bos_id == n_ordinary == tok.encode_special("<|bos|>")
    # bytes are their own ids; unseen pairs stay unmerged
    assert [tok.decode_single_token_bytes(b) for b in range(256)] == [bytes([b]) for b in range(256)]
    assert tok.encode("zqxjkv") == list(b"zqxjkv")


@pytest.mark.parametrize("text", ["hello world", "naïve café 你好 🙂", "unseen tokens: zqxjkv", "한국어 문장 🇰🇷 👩‍👩‍👧", "", " \n\t\r\n  x", "\x00\xff\ufffd"])
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_specials_never_parsed_from_plain_text(tok):
    specials = set(range(tok.bos_id, tok.vocab_size))
    for s in SPECIAL_TOKENS:
        ids = tok.encode(f"say {s} now")
        assert not specials & set(ids)
        assert tok.decode(ids) == f"say {s} now"
    assert not specials & {i for row in tok.encode(list(SPECIAL_TOKENS)) for i in row}


def test_prepend_append(tok):
    body = tok.encode("hello")
    assert tok.encode("hello", prepend="<|bos|>", append="<|user_end|>") == [tok.bos_id, *body, tok.encode_special("<|user_end|>")]
    assert tok.encode("hello", prepend=tok.bos_id) == [tok.bos_id, *body]
    assert tok("hello", append=7) == [*body, 7]  # any id is allowed, as in nanochat
    assert tok.encode("hello", prepend=np.int64(tok.bos_id)) == [tok.bos_id, *body]
    assert tok.encode(["a", "b"], prepend="<|bos|>") == [[tok.bos_id, *tok.encode("a")], [tok.bos_id, *tok.encode("b")]]
    with pytest.raises(ValueError, match="unknown special token"):
        tok.encode("x", prepend="<|nope|>")
    with pytest.raises(ValueError, match="id in"):
        tok.encode("x", append=VOCAB_SIZE)
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


def test_batch_encode_equals_single(tok, corpus):
    texts = corpus[:5] + ["", "x" * 1000]
    assert tok.encode(texts, num_threads=2) == [tok.encode(t) for t in texts]


def test_token_bytes(tok):
    tb = tok.token_bytes()
    assert tb.dtype == np.int32 and tb.shape == (VOCAB_SIZE,)
    assert (tb[tok.bos_id :] == 0).all()
    assert (tb[:256] == 1).all()
    (hello,) = tok.encode(" hello")  # the corpus makes " hello" one merged token
    assert hello >= 256 and tb[hello] == 6
    assert all(tb[i] == len(tok.decode_single_token_bytes(i)) for i in range(256, tok.bos_id))


def test_id_to_token(tok):
    (hello,) = tok.encode(" hello")
    assert tok.id_to_token(hello) == " hello"
    assert tok.id_to_token(tok.bos_id) == "<|bos|>"


def test_split_pattern():
    cases = {
        "12345": ["12", "34", "5"],  # groups of 1-2 digits, not GPT-4's 1-3
        "Hello world": ["Hello", " world"],
        "I'm fine": ["I", "'m", " fine"],
        "THE'S": ["THE", "'S"],
        "a  b": ["a", " ", " b"],
        "x!!\n\ny": ["x", "!!\n\n", "y"],
        "한국어 텍스트": ["한국어", " 텍스트"],
    }
    for text, pieces in cases.items():
        assert regex.findall(SPLIT_PATTERN, text) == pieces


def test_digits_never_merge_past_two():
    # "12345 12345 ..." pre-splits into "12", "34", "5", " ": only 2 merges exist, "123" can never form
    digits = Tokenizer.train(["12345 " * 50], vocab_size=256 + 2 + 9)
    assert [digits.decode([i]) for i in digits.encode("12345")] == ["12", "34", "5"]
    with pytest.raises(TokenizerTrainingError, match="at most 267"):
        Tokenizer.train(["12345 " * 50], vocab_size=256 + 3 + 9)


def test_train_errors():
    with pytest.raises(ValueError, match=str(MIN_VOCAB_SIZE)):
        Tokenizer.train(["abc"], vocab_size=MIN_VOCAB_SIZE - 1)
    with pytest.raises(TokenizerTrainingError, match="at most 265") as info:
        Tokenizer.train([], vocab_size=300)  # no text, no merges
    assert info.value.max_vocab_size == 265


def test_train_without_rustbpe(monkeypatch):
    monkeypatch.setitem(sys.modules, "rustbpe", None)  # makes `import rustbpe` fail
    with pytest.raises(ImportError, match=r"flaxchat-tokenizer\[train\]"):
        Tokenizer.train(["abc"], vocab_size=300)


def test_pickle_round_trip(tok, corpus):
    import pickle

    again = pickle.loads(pickle.dumps(tok))  # data loader workers receive the tokenizer pickled
    assert again.encode(corpus[2]) == tok.encode(corpus[2]) and again.vocab_size == tok.vocab_size
