"""Tokens -> text deltas: split characters are held until complete, stop strings cut the text."""

from flaxchat.infer.server.text import TextAssembler


def deltas(tokenizer, text: str, stop=None) -> tuple[list[str], TextAssembler]:
    assembler = TextAssembler(tokenizer, stop)
    out = [assembler.push(token) for token in tokenizer.encode(text)]
    return out + [assembler.flush()], assembler


def test_a_character_split_over_tokens_is_held_until_complete(tokenizer):
    out, assembler = deltas(tokenizer, "né🦊")  # byte tokens: é is 2 bytes, the fox 4
    assert out == ["n", "", "é", "", "", "", "🦊", ""] and assembler.text == "né🦊"


def test_an_incomplete_character_at_the_end_is_replaced(tokenizer):
    assembler = TextAssembler(tokenizer)
    assert assembler.push("é".encode()[0]) == "" and assembler.flush() == "\ufffd"


def test_stop_strings_cut_the_text_even_across_tokens(tokenizer):
    out, assembler = deltas(tokenizer, "hello world", stop=["lo w", "zzz"])
    assert "".join(out) == assembler.text == "hel" and assembler.stopped
    assert assembler.push(ord("x")) == ""  # nothing after a stop


def test_text_that_only_looks_like_a_stop_string_is_released(tokenizer):
    out, assembler = deltas(tokenizer, "abxab", stop=["abc"])
    assert out == ["", "", "abx", "", "", "ab"] and not assembler.stopped
