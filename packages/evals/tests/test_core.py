"""CORE on a tiny bundle (its items and their expected outcomes are in conftest.py) with a bigram model
whose losses are known by hand, plus the pieces: config, rendering, few-shot sampling, ranges, download."""

import random
import shutil
import zipfile

import numpy as np
import pytest
from flaxchat.evals import bundle as bundle_module
from flaxchat.evals.bundle import CORE_LABELS, ensure_bundle, load_bundle
from flaxchat.evals.core import (
    common_length,
    evaluate_core,
    fewshot_indices,
    load_task_data,
    prepare_item,
    render_prompts,
)
from flaxchat.evals.errors import CoreError


def bigram_table(vocab=265):
    table = np.zeros((vocab, vocab), np.float32)
    table[:, ord("x")] = 5.0
    table[ord("z"), ord(" ")] = 7.0
    return table


@pytest.fixture(scope="module")
def model(bigram):
    return bigram(bigram_table())


def test_bundle_config_is_read_from_the_files(tmp_path, make_bundle):
    bundle = load_bundle(make_bundle(tmp_path / "eval_bundle"))
    mc, schema, lm = bundle.tasks
    assert (mc.label, mc.num_fewshot, mc.task_type, mc.continuation_delimiter, mc.random_baseline) == (
        "mc_demo", 1, "multiple_choice", "\nAnswer: ", 25.0)
    assert (schema.continuation_delimiter, schema.random_baseline) == (" ", 50.0)
    assert lm.num_fewshot == 2  # the first of the listed shot counts


def test_bad_bundles_are_explained(tmp_path, make_bundle):
    with pytest.raises(CoreError, match="not a directory"):
        load_bundle(tmp_path / "nope")
    root = make_bundle(tmp_path / "b1")
    (root / "eval_data" / "reasoning" / "mc_demo.jsonl").unlink()
    with pytest.raises(CoreError, match="lacks data file"):
        load_bundle(root)
    root = make_bundle(tmp_path / "b2", replace=("schema\n", "ranking\n"))
    with pytest.raises(CoreError, match="type 'ranking'"):
        load_bundle(root)


def test_prompt_rendering_matches_nanochat_templates():
    mc_shot = {"query": "Capital of France?", "choices": ["Paris", "Rome"], "gold": 0}
    item = {"query": "2+2?", "choices": ["4", "5"], "gold": 0}
    assert render_prompts(item, "multiple_choice", "\nAnswer: ", [mc_shot]) == [
        "Capital of France?\nAnswer: Paris\n\n2+2?\nAnswer: 4",
        "Capital of France?\nAnswer: Paris\n\n2+2?\nAnswer: 5",
    ]
    shot = {"context_options": ["A cat", "A dog"], "continuation": "barks.", "gold": 1}
    item = {"context_options": ["He ran", "She ran"], "continuation": "home.", "gold": 0}
    assert render_prompts(item, "schema", " ", [shot]) == ["A dog barks.\n\nHe ran home.", "A dog barks.\n\nShe ran home."]
    shots = [{"context": " The sky is ", "continuation": "blue"}, {"context": "Grass is", "continuation": "green"}]
    item = {"context": "Snow is  ", "continuation": "white"}
    assert render_prompts(item, "language_modeling", " ", shots) == [
        "The sky is blue\n\nGrass is green\n\nSnow is",
        "The sky is blue\n\nGrass is green\n\nSnow is white",
    ]


def test_fewshot_sampling_equals_sampling_the_materialized_list():
    for n, k in [(5, 2), (12, 10), (60, 10), (300, 10), (2000, 3), (90, 1)]:
        for idx in (0, 1, n // 2, n - 1):
            naive = random.Random(1234 + idx).sample([i for i in range(n) if i != idx], k)
            assert fewshot_indices(n, idx, k) == naive


def test_scoring_ranges(tokenizer):
    from flaxchat.evals.bundle import CoreTask

    assert common_length([[1, 2, 3], [1, 2, 4], [1, 2]], "left") == 2
    assert common_length([[9, 2, 3], [1, 2, 3]], "right") == 2
    mc = CoreTask("t", "u", 0, "multiple_choice", " ", 25.0)
    item = prepare_item(tokenizer, {"query": "Q", "choices": ["ab", "ac"], "gold": 0}, mc)
    bos = tokenizer.bos_id
    assert item.tokens == [[bos, ord("Q"), 32, 97, 98], [bos, ord("Q"), 32, 97, 99]]
    assert (item.starts, item.ends) == ([4, 4], [5, 5])  # the common "a" is not scored
    lm = CoreTask("t", "u", 0, "language_modeling", " ", 0.0)
    item = prepare_item(tokenizer, {"context": "hi", "continuation": "yo"}, lm)
    assert item.tokens == [[bos, 104, 105, 32, 121, 111]] and (item.starts, item.ends) == ([3], [6])


def test_core_on_a_tiny_bundle_matches_hand_computed_values(tmp_path, model, tokenizer, make_bundle):
    bundle = load_bundle(make_bundle(tmp_path / "eval_bundle"))
    result = evaluate_core(model, tokenizer, bundle, batch_rows=4)
    accuracy = {r.label: r.accuracy for r in result.tasks}
    assert accuracy == {"mc_demo": 0.5, "schema_demo": pytest.approx(2 / 3), "lm_demo": 0.5}
    centered = {r.label: r.centered for r in result.tasks}
    assert centered == pytest.approx({"mc_demo": (0.5 - 0.25) / 0.75, "schema_demo": (2 / 3 - 0.5) / 0.5, "lm_demo": 0.5})
    assert result.core == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    assert result.missing == CORE_LABELS  # a demo bundle covers none of the real CORE tasks
    # Batching does not change the answers.
    assert evaluate_core(model, tokenizer, bundle, batch_rows=1).core == result.core


def test_independent_loss_computation_agrees_on_each_choice(tmp_path, make_bundle, jsonl_rows):
    """The expected MC outcome from the bigram table directly (log-softmax per transition), per item."""
    table = bigram_table()
    lse = np.log(np.exp(table.astype(np.float64)).sum(-1))

    def mean_loss(text, start):
        data = text.encode()
        return np.mean([lse[data[j - 1]] - table[data[j - 1], data[j]] for j in range(start, len(data))])

    mc = jsonl_rows(make_bundle(tmp_path / "b") / "eval_data" / "reasoning" / "mc_demo.jsonl")
    for item in mc:
        prefix = len(f"{item['query']}\nAnswer: ")
        losses = [mean_loss(f"{item['query']}\nAnswer: {c}", prefix) for c in item["choices"]]
        expected = losses.index(min(losses)) == item["gold"]
        assert expected == (item["query"] in ("Q1?", "Q3?"))


def test_task_data_order_and_too_few_items(tmp_path, model, tokenizer, make_bundle, jsonl_rows):
    bundle = load_bundle(make_bundle(tmp_path / "eval_bundle"))
    lm_task = bundle.tasks[2]
    data = load_task_data(bundle, lm_task)
    expected = jsonl_rows(bundle.data_path(lm_task))
    random.Random(1337).shuffle(expected)
    assert data == expected
    assert load_task_data(bundle, lm_task, max_per_task=2) == expected[:2]
    with pytest.raises(CoreError, match="at least 3 items"):
        evaluate_core(model, tokenizer, bundle, max_per_task=2)
    assert evaluate_core(model, tokenizer, bundle, max_per_task=3).tasks[0].items == 3


def test_bundle_downloads_once_checks_and_unpacks(tmp_path, make_bundle, http_server, monkeypatch):
    base = tmp_path / "base"
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(base))
    served = tmp_path / "served"
    make_bundle(served / "eval_bundle")
    with zipfile.ZipFile(served / "eval_bundle.zip", "w") as z:
        for path in sorted((served / "eval_bundle").rglob("*")):
            z.write(path, path.relative_to(served))
    shutil.rmtree(served / "eval_bundle")
    monkeypatch.setattr(bundle_module, "EVAL_BUNDLE_URL", f"{http_server(served)}/eval_bundle.zip")
    bundle = ensure_bundle()
    assert bundle.root == base / "eval_bundle" and [t.label for t in bundle.tasks] == ["mc_demo", "schema_demo", "lm_demo"]
    assert not (base / "eval_bundle.zip").exists()  # unpacked, then removed
    (served / "eval_bundle.zip").unlink()
    assert ensure_bundle().root == bundle.root  # no second download


def test_bundle_zip_check_rejects_damage(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="not a zip"):
        bundle_module._check_zip(bad)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("something/else.txt", "x")
    with pytest.raises(ValueError, match="no eval_bundle/core.yaml"):
        bundle_module._check_zip(tmp_path / "other.zip")
