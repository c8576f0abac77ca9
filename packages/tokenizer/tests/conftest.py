import pytest

from flaxchat.tokenizer import SPECIAL_TOKENS, Tokenizer

# A few KB of text: enough for the BPE machinery and a known merge (" hello").
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "hello world, hello tokenizer, hello hello hello",
    "Numbers like 12345 and unicode like naïve café 你好 🙂 should survive.",
    "def f(x):\n    return x + 1\n",
    "한국어 문장도 조금 있습니다. 안녕하세요!",
] * 16


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return list(CORPUS)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(iter(CORPUS), vocab_size=256 + len(SPECIAL_TOKENS) + 35)
