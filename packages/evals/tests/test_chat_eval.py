"""Chat evaluation with models whose outputs are known: letter logits, scripted generations, and loss vs numpy."""

import json

import jax
import numpy as np
import pytest
from flax import nnx
from flaxchat.evals.chat_eval import (
    SamplingConfig,
    chatcore,
    chatcore_cat,
    run_categorical_eval,
    run_chat_eval,
    run_generative_eval,
    run_loss_eval,
)
from flaxchat.evals.tasks import ARC, GSM8K, MMLU, IdentityConversations
from flaxchat.infer.engine import Engine

GOLDS = [1, 0, 1, 2, 3, 1]  # MMLU answers; the model below always prefers B, then C


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def letter_model(bigram, tokenizer):
    """At <|assistant_start|> (the answer position) B scores 3, C 2, "3" 1, everything else 0."""
    table = np.zeros((265, 265), np.float32)
    start = tokenizer.encode_special("<|assistant_start|>")
    table[start, ord("B")], table[start, ord("C")], table[start, ord("3")] = 3.0, 2.0, 1.0
    return bigram(table)


def test_categorical_accuracy_is_exact(tmp_path, letter_model, tokenizer):
    rows = [{"question": f"question number {i}" + "?" * i, "subject": "anatomy", "choices": ["w", "x", "y", "z"],
             "answer": g} for i, g in enumerate(GOLDS)]
    task = MMLU(path=write_jsonl(tmp_path / "mmlu.jsonl", rows))
    score = run_categorical_eval(task, letter_model, tokenizer, batch_size=4)
    assert (score.passed, score.total, score.value) == (3, 6, 0.5)  # the three golds equal to B
    first = [task[i]["messages"][1]["content"] for i in range(4)]
    assert run_categorical_eval(task, letter_model, tokenizer, batch_size=3, max_problems=4).passed == first.count("B")


def test_categorical_restricts_to_each_problems_letters(tmp_path, letter_model, tokenizer):
    rows = [  # labels 1..4: "3" is the best of them; labels A, C: "C" beats "A" although B scores higher overall
        {"question": "q1", "choices": {"text": ["a", "b", "c", "d"], "label": ["1", "2", "3", "4"]}, "answerKey": "3"},
        {"question": "q2", "choices": {"text": ["a", "b"], "label": ["A", "C"]}, "answerKey": "C"},
        {"question": "q3", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "4"]}, "answerKey": "4"},
    ]
    task = ARC("ARC-Easy", "test", path=write_jsonl(tmp_path / "arc.jsonl", rows))
    score = run_chat_eval(task, letter_model, tokenizer)
    assert (score.passed, score.total) == (2, 3)  # q3: all three score 0, the first ("1") wins


GSM_ROWS = [  # prompt length = len(question) + 4 (BOS, user start/end, assistant start)
    {"question": "a" * 56, "answer": "<<2+3=5>>5\n#### 5"},  # "#### 5" right after the prompt: right
    {"question": "b" * 53, "answer": "#### 5"},  # three filler tokens first: still right
    {"question": "c" * 56, "answer": "#### 6"},  # wrong answer
    {"question": "d" * 58, "answer": "#### 5"},  # starts two tokens into the script: "## 5", wrong
]


def test_generative_eval_with_a_scripted_model(tmp_path, scripted, tokenizer):
    end = tokenizer.encode_special("<|assistant_end|>")
    model = scripted({60 + k: t for k, t in enumerate([*b"#### 5", end])})
    task = GSM8K("test", path=write_jsonl(tmp_path / "gsm8k.jsonl", GSM_ROWS))
    engine = Engine(model, tokenizer)
    score = run_generative_eval(task, engine, SamplingConfig(max_new_tokens=12))
    assert (score.passed, score.total, score.value) == (2, 4, 0.5)
    # Too few new tokens to reach the answer.
    assert run_generative_eval(task, engine, SamplingConfig(max_new_tokens=3)).passed == 0


def test_loss_eval_matches_numpy(tiny_gpt, tokenizer):
    task = IdentityConversations(stop=3)
    score = run_loss_eval(task, tiny_gpt, tokenizer, batch_size=2)
    graphdef, state = nnx.split(tiny_gpt)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    nats, count = 0.0, 0
    for conversation in task:
        ids, mask = tokenizer.render_conversation(conversation, max_tokens=tiny_gpt.config.sequence_len + 1)
        padded = np.full((1, tiny_gpt.config.sequence_len), tokenizer.bos_id, np.int32)  # causal: padding after is harmless
        padded[0, : len(ids) - 1] = ids[:-1]
        logits = np.asarray(forward(state, padded), np.float64)[0]
        lse = np.log(np.exp(logits).sum(-1))
        for t, (target, supervised) in enumerate(zip(ids[1:], mask[1:])):
            if supervised:
                nats += lse[t] - logits[t, target]
                count += 1
    assert score.metric == "loss" and score.tokens == count
    assert score.value == pytest.approx(nats / count, rel=1e-5)


def test_chatcore_is_the_mean_centered_accuracy():
    acc = {"arc-easy": 0.5, "arc-challenge": 0.25, "mmlu": 0.625, "gsm8k": 0.1, "humaneval": 0.2}
    assert chatcore(acc) == pytest.approx((1 / 3 + 0 + 0.5 + 0.1 + 0.2) / 5)
    assert chatcore_cat(acc) == pytest.approx((1 / 3 + 0 + 0.5) / 3)
    del acc["humaneval"]
    assert chatcore(acc) is None and chatcore_cat(acc) is not None
