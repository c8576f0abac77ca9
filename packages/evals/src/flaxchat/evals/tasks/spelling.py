"""SpellingBee ("How many r are in strawberry?") and SimpleSpelling ("Spell the word: apple"), as nanochat's.

Both draw example i from random.Random(seed + i) (test split: seed + 10,000,000 + i), so with
seed 0 and the same word list they are nanochat's examples. SpellingBee's answer spells the
word, counts by hand, double-checks with a python tool call (`'word'.count('r')`) and ends with
"#### n"; it is judged like GSM8K. SimpleSpelling's answer is "word:w,o,r,d".
"""

from __future__ import annotations

import random
from pathlib import Path

from flaxchat.evals.errors import TaskError
from flaxchat.evals.tasks.common import Task, check_int, final_answers_match
from flaxchat.evals.tasks.words import embedded_words, read_word_list

LETTERS = "abcdefghijklmnopqrstuvwxyz"
SPLITS = ("train", "test")
TEST_SEED_OFFSET = 10_000_000  # above any train index, so the splits never share a seed
# nanochat's user-message templates (with translations) for data augmentation.
USER_MSG_TEMPLATES = (
    "How many {letter} are in the word {word}",
    "How many {letter} are in {word}",
    "Count the number of {letter} in {word}",
    "How many times does {letter} appear in {word}",
    "What's the count of {letter} in {word}",
    "In the word {word}, how many {letter} are there",
    "How many letter {letter} are in the word {word}",
    "Count how many {letter} appear in {word}",
    "Tell me the number of {letter} in {word}",
    "How many occurrences of {letter} are in {word}",
    "Find the count of {letter} in {word}",
    "Can you count the {letter} letters in {word}",
    "What is the frequency of {letter} in {word}",
    "How many {letter}s are in {word}",
    "How many {letter}'s are in {word}",
    "Count all the {letter} in {word}",
    "How many times is {letter} in {word}",
    "Number of {letter} in {word}",
    "Total count of {letter} in {word}",
    "How many {letter} does {word} have",
    "How many {letter} does {word} contain",
    "What's the number of {letter} in {word}",
    "{word} has how many {letter}",
    "In {word}, count the {letter}",
    "How many {letter} appear in {word}",
    "Count the {letter} in {word}",
    "Give me the count of {letter} in {word}",
    "How many instances of {letter} in {word}",
    "Show me how many {letter} are in {word}",
    "Calculate the number of {letter} in {word}",
    "¿Cuántas {letter} hay en {word}?",
    "¿Cuántas veces aparece {letter} en {word}?",
    "Cuenta las {letter} en {word}",
    "¿Cuántas letras {letter} tiene {word}?",
    "{word}中有多少个{letter}",
    "{word}里有几个{letter}",
    "数一下{word}中的{letter}",
    "{word}这个词里有多少{letter}",
    "{word}에 {letter}가 몇 개 있나요",
    "{word}에서 {letter}의 개수는",
    "{word}에 {letter}가 몇 번 나오나요",
    "{word}라는 단어에 {letter}가 몇 개",
    "Combien de {letter} dans {word}",
    "Combien de fois {letter} apparaît dans {word}",
    "Compte les {letter} dans {word}",
    "Wie viele {letter} sind in {word}",
    "Wie oft kommt {letter} in {word} vor",
    "Zähle die {letter} in {word}",
    "{word}に{letter}は何個ありますか",
    "{word}の中に{letter}がいくつ",
    "{word}に{letter}が何回出てくる",
)


class _WordTask(Task):
    eval_type = "generative"

    def __init__(self, size: int, split: str, seed: int, words: str | Path | None, **slice_args):
        super().__init__(**slice_args)
        if split not in SPLITS:
            raise TaskError(f"split must be one of {SPLITS}, got {split!r}")
        self.size, self.split, self.seed = check_int("size", size, 1), split, check_int("seed", seed)
        self.words = embedded_words() if words is None else read_word_list(words)
        self.source = f"generated from {'the embedded word list' if words is None else words} ({len(self.words)} words)"

    def num_examples(self) -> int:
        return self.size

    def _rng(self, index: int) -> random.Random:
        return random.Random(self.seed + index + (TEST_SEED_OFFSET if self.split == "test" else 0))


def spelled(word: str) -> str:
    return ",".join(word)


class SpellingBee(_WordTask):
    """Count one letter in a word; the answer mixes manual counting with a python check."""

    def __init__(self, size: int = 1000, split: str = "train", seed: int = 0, words: str | Path | None = None, **slice_args):
        super().__init__(size, split, seed, words, **slice_args)

    def get_example(self, index: int) -> dict:
        rng = self._rng(index)
        word = rng.choice(self.words)
        letter = rng.choice(word) if rng.random() < 0.9 else rng.choice(LETTERS)
        count = word.count(letter)
        template = rng.choice(USER_MSG_TEMPLATES)
        if rng.random() < 0.3:  # people often skip the shift key
            template = template.lower()
        letter_quote, word_quote = rng.choice(["", "'", '"']), rng.choice(["", "'", '"'])
        user = template.format(letter=f"{letter_quote}{letter}{letter_quote}", word=f"{word_quote}{word}{word_quote}")
        if rng.random() < 0.5:
            user += "?"
        manual = (f"We are asked to find the number '{letter}' in the word '{word}'. Let me try a manual approach first."
                  f"\n\nFirst spell the word out:\n{word}:{spelled(word)}\n\nThen count the occurrences of '{letter}':\n")
        running = 0
        for i, char in enumerate(word, 1):
            if char == letter:
                running += 1
                manual += f"{i}:{char} hit! count={running}\n"  # no space after ":": " a" and "a" are different tokens
            else:
                manual += f"{i}:{char}\n"
        manual += f"\nThis gives us {running}."
        parts = [
            {"type": "text", "text": manual},
            {"type": "text", "text": "\n\nLet me double check this using Python:\n\n"},
            {"type": "python", "text": f"'{word}'.count('{letter}')"},
            {"type": "python_output", "text": str(count)},
            {"type": "text", "text": f"\n\nPython gives us {count}.\n\nMy final answer is:\n\n#### {count}"},
        ]
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": parts}]}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return final_answers_match(conversation, completion)


class SimpleSpelling(_WordTask):
    """Spell a word letter by letter: the skill SpellingBee depends on, in its plainest form."""

    def __init__(self, size: int = 1000, split: str = "train", seed: int = 0, words: str | Path | None = None, **slice_args):
        super().__init__(size, split, seed, words, **slice_args)
        self.words = list(self.words)
        random.Random(42).shuffle(self.words)  # a different word order from SpellingBee's

    def get_example(self, index: int) -> dict:
        word = self._rng(index).choice(self.words)
        return {"messages": [
            {"role": "user", "content": f"Spell the word: {word}"},
            {"role": "assistant", "content": f"{word}:{spelled(word)}"},
        ]}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return completion.strip() == conversation["messages"][-1]["content"]
