"""CORE's BIG-bench tasks from a fake bigbench sdist in the real layout: the records against llm-foundry's
format written out by hand, the bundle through the existing loader and CORE scoring, the PyPI download,
and damaged sdists."""

import hashlib
import io
import json
import tarfile

import pytest
from flaxchat.evals import bigbench
from flaxchat.evals.bigbench import TASKS, build_bundle, read_members, task_records
from flaxchat.evals.bundle import CORE_LABELS, ensure_bundle, load_bundle
from flaxchat.evals.download import Retry
from flaxchat.evals.errors import BigBenchError, DataUnavailable
from flaxchat.evals.suite import SuiteConfig, run_task

ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks"
DYCK_PREFIX = "Complete the rest of the sequence, making sure that the parentheses are closed properly. \n"
LCS_PREFIX = "Given two strings, determine the length of the longest common subsequence.\n"
VALID_PREFIX = "Determine whether the given sequence of parentheses is properly matched.\n"
OPERATORS_PREFIX = "Given the definition of the op operator, compute the result."
LANGUAGE_PREFIX = "Given a sentence, select the correct language among the choices"

# task.json files as the sdist has them (prefixes copied from bigbench 1.0.0), with hand-written examples.
TASK_JSONS = {
    "qa_wikidata": {"name": "qa_wikidata", "description": "Wikidata prompts", "example_input_prefix": "\n",
                    "example_output_prefix": " ", "examples": [
                        {"input": "The capital of France is", "target": ["Paris", "Paris, France"]},
                        {"input": "The language of Brazil is", "target": "Portuguese"},
                        {"input": "The capital of France is", "target": ["Paris", "Paris, France"]},  # duplicate
                        {"input": "Mount Fuji is located in", "target": " Japan "}]},
    "dyck_languages": {"name": "dyck_languages", "description": "Close a Dyck-n word", "task_prefix": DYCK_PREFIX,
                       "append_choices_to_input": False, "example_input_prefix": "\nInput: ",
                       "example_output_prefix": "\nOutput: ", "examples": [
                           {"input": "( [", "target_scores": {")": 0, "] )": 1, "] ]": 0}},
                           {"input": "{ < >", "target_scores": {"}": 1, "> }": 0}}]},
    "cs_algorithms": {"name": "cs_algorithms", "description": "Two CS tasks"},  # a container: no examples
    "cs_algorithms/lcs": {"name": "lcs", "description": "LCS", "task_prefix": LCS_PREFIX,
                          "append_choices_to_input": False, "example_input_prefix": "\nStrings: ",
                          "example_output_prefix": "\nLength of longest common subsequence: ", "examples": [
                              {"input": "ABC AC", "target_scores": {"0": 0, "1": 0, "2": 1}},
                              {"input": "XY Z", "target_scores": {"0": 1, "1": 0, "2": 0}}]},
    "cs_algorithms/valid_parentheses": {"name": "valid_parentheses", "description": "Parentheses",
                                        "task_prefix": VALID_PREFIX, "append_choices_to_input": False,
                                        "example_input_prefix": "\nSequence: ",
                                        "example_output_prefix": "\nValid/Invalid? ", "examples": [
                                            {"input": "( )", "target_scores": {"Valid": 1, "Invalid": 0}},
                                            {"input": ") (", "target_scores": {"Valid": 0, "Invalid": 1}},
                                            {"input": "[ }", "target_scores": {"Valid": 0, "Invalid": 1}}]},
    "operators": {"name": "operators", "description": "Apply an operator", "task_prefix": OPERATORS_PREFIX,
                  "example_input_prefix": "\n", "example_output_prefix": " = ", "examples": [
                      {"input": "op i is i.\nop 17", "target": "17"},
                      {"input": "i op j is the sum of i and j.\n2 op 3", "target": "5"}]},
    "repeat_copy_logic": {"name": "repeat_copy_logic", "description": "Repeat", "task_prefix": "repeat with logic:\n",
                          "examples": [{"input": "Repeat 2 times hello", "target": "hello hello", "comment": "warmup"},
                                       {"input": "say cat then dog", "target": "cat dog"}]},
    "language_identification": {"name": "language_identification", "description": "Identify the language",
                                "task_prefix": LANGUAGE_PREFIX, "append_choices_to_input": True,
                                "example_input_prefix": "\nSentence: ", "example_output_prefix": "\nLanguage: ",
                                "examples": [
                                    {"input": "Dit is een zin.", "target_scores": {
                                        "German": 0, "Dutch": 1, "Frisian": 0, "Afrikaans": 0, "Danish": 0}},
                                    {"input": "Ceci est une phrase.", "target_scores": {
                                        "Italian": 0, "Catalan": 0, "French": 1, "Occitan": 0}}]},
}

# llm-foundry's records for them. Order: random.Random(42).shuffle of the distinct examples ([1, 0] for 2,
# [1, 0, 2] for 3), each subtask's train part first (empty here: 16 or fewer examples are all validation).
EXPECTED = {
    "bigbench_qa_wikidata": [
        {"context": "The language of Brazil is", "continuation": "Portuguese"},
        {"context": "The capital of France is", "continuation": "Paris"},
        {"context": "Mount Fuji is located in", "continuation": "Japan"},
    ],
    "bigbench_dyck_languages": [
        {"context": DYCK_PREFIX + "\nInput: { < >\nOutput:", "continuation": "}"},
        {"context": DYCK_PREFIX + "\nInput: ( [\nOutput:", "continuation": "] )"},
    ],
    "bigbench_cs_algorithms": [
        {"context": LCS_PREFIX + "\nStrings: XY Z\nLength of longest common subsequence:", "continuation": "0"},
        {"context": LCS_PREFIX + "\nStrings: ABC AC\nLength of longest common subsequence:", "continuation": "2"},
        {"context": VALID_PREFIX + "\nSequence: ) (\nValid/Invalid?", "continuation": "Invalid"},
        {"context": VALID_PREFIX + "\nSequence: ( )\nValid/Invalid?", "continuation": "Valid"},
        {"context": VALID_PREFIX + "\nSequence: [ }\nValid/Invalid?", "continuation": "Invalid"},
    ],
    "bigbench_operators": [
        {"context": OPERATORS_PREFIX + "\ni op j is the sum of i and j.\n2 op 3 =", "continuation": "5"},
        {"context": OPERATORS_PREFIX + "\nop i is i.\nop 17 =", "continuation": "17"},
    ],
    "bigbench_repeat_copy_logic": [
        {"context": "repeat with logic:\n\nQ: say cat then dog\nA:", "continuation": "cat dog"},
        {"context": "repeat with logic:\n\nQ: Repeat 2 times hello\nA:", "continuation": "hello hello"},
    ],
    # The answer plus 3 other languages drawn with random.Random(1234) (llm-foundry's own draw is unpublished).
    "bigbench_language_identification": [
        {"query": LANGUAGE_PREFIX + "\nSentence: Ceci est une phrase.\nA. Italian\nB. French\nC. Occitan\nD. Catalan"
                  "\nAnswer: ", "choices": ["A", "B", "C", "D"], "gold": 1},
        {"query": LANGUAGE_PREFIX + "\nSentence: Dit is een zin.\nA. Dutch\nB. Frisian\nC. German\nD. Danish"
                  "\nAnswer: ", "choices": ["A", "B", "C", "D"], "gold": 0},
    ],
}


def write_sdist(path, task_jsons=TASK_JSONS, raw=None):
    """A tar.gz in the sdist's layout: <ROOT>/<task>/task.json per entry (raw: member -> bytes as is)."""
    members = {f"{ROOT}/{name}/task.json": json.dumps(data).encode() for name, data in task_jsons.items()}
    members |= raw or {}
    members["bigbench-1.0.0/setup.py"] = b"# not a task\n"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def generated_task_jsons(n=12):
    """The same tasks with n short generated examples each (enough for CORE's 10 few-shot examples) and no
    prefixes: short prompts, so the tiny model compiles for few shapes."""
    def lm(i):
        return {"input": f"w{i}", "target": f"x{i % 3}"}

    def mc(i):
        return {"input": f"s{i}", "target_scores": {f"L{j}": int(j == i % 5) for j in range(5)}}

    multiple_choice = {"dyck_languages", "cs_algorithms/lcs", "cs_algorithms/valid_parentheses", "language_identification"}
    jsons = {"cs_algorithms": TASK_JSONS["cs_algorithms"]}
    for name, data in TASK_JSONS.items():
        if "examples" in data:
            examples = [(mc if name in multiple_choice else lm)(i) for i in range(n)]
            jsons[name] = {**{k: v for k, v in data.items() if k != "task_prefix"}, "examples": examples,
                           "example_input_prefix": "", "example_output_prefix": ""}
    return jsons


@pytest.fixture(autouse=True)
def base(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path / "base"))
    monkeypatch.delenv("FLAXCHAT_OFFLINE", raising=False)
    return tmp_path / "base"


def test_records_reproduce_llm_foundrys_format(tmp_path, jsonl_rows):
    counts = build_bundle(write_sdist(tmp_path / "bigbench-1.0.0.tar.gz"), tmp_path / "bundle")
    assert counts == {label: len(rows) for label, rows in EXPECTED.items()}
    for task in TASKS:
        assert jsonl_rows(tmp_path / "bundle" / "eval_data" / task.dataset_uri) == EXPECTED[task.label], task.label


def test_bundle_config_is_the_real_bundles_entries(tmp_path):
    build_bundle(write_sdist(tmp_path / "sdist.tar.gz"), tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    rows = [(t.label, t.dataset_uri, t.num_fewshot, t.task_type, t.continuation_delimiter, t.random_baseline)
            for t in bundle.tasks]
    assert rows == [
        ("bigbench_qa_wikidata", "world_knowledge/bigbench_qa_wikidata.jsonl", 10, "language_modeling", " ", 0.0),
        ("bigbench_dyck_languages", "symbolic_problem_solving/bigbench_dyck_languages.jsonl", 10,
         "language_modeling", " ", 0.0),
        ("bigbench_cs_algorithms", "symbolic_problem_solving/bigbench_cs_algorithms.jsonl", 10,
         "language_modeling", " ", 0.0),
        ("bigbench_operators", "symbolic_problem_solving/bigbench_operators.jsonl", 10, "language_modeling", " ", 0.0),
        ("bigbench_repeat_copy_logic", "symbolic_problem_solving/bigbench_repeat_copy_logic.jsonl", 10,
         "language_modeling", " ", 0.0),
        ("bigbench_language_identification", "language_understanding/bigbench_language_identification.jsonl", 10,
         "multiple_choice", " ", 9.1),
    ]
    source = json.loads((tmp_path / "bundle" / "bigbench_source.json").read_text())
    assert source["sdist_sha256"] == hashlib.sha256((tmp_path / "sdist.tar.gz").read_bytes()).hexdigest()


def test_subtasks_are_ordered_train_parts_first():
    """bbseqio's split of 20 examples: Random(42) order [19, 5, 14, 4 | 9, 13, ...], the last 16 validation."""
    def subtask(tag):
        return {"examples": [{"input": f"{tag}{i}", "target": "t"} for i in range(20)], "example_input_prefix": "",
                "example_output_prefix": ""}

    task = next(t for t in TASKS if t.subtasks)
    records = task_records(task, dict(zip(task.members, (subtask("a"), subtask("b")))))
    order = [19, 5, 14, 4, 9, 13, 15, 18, 6, 12, 17, 10, 1, 11, 2, 16, 7, 8, 0, 3]
    expected = ([f"a{i}" for i in order[:4]] + [f"b{i}" for i in order[:4]] + [f"a{i}" for i in order[4:]]
                + [f"b{i}" for i in order[4:]])
    assert [r["context"] for r in records] == expected


def test_core_runs_end_to_end_and_reports_6_of_22(tmp_path, tiny_gpt, tokenizer):
    sdist = write_sdist(tmp_path / "bigbench-1.0.0.tar.gz", generated_task_jsons())
    outcome = run_task("core", tiny_gpt, tokenizer, None, SuiteConfig(bundle=str(sdist), max_problems=11))
    assert outcome.status == "ok", outcome.detail
    assert [p["label"] for p in outcome.breakdown] == [t.label for t in TASKS]
    assert all(p["items"] == 11 for p in outcome.breakdown)
    assert -0.1 <= outcome.value <= 1.0  # language_identification's centered floor is -9.1/90.9
    assert outcome.detail.startswith("6/22 CORE tasks") and "not comparable" in outcome.detail
    assert {t.label for t in TASKS} <= set(CORE_LABELS)


def test_download_checks_pypis_sha256_and_caches(tmp_path, http_server, monkeypatch, base):
    served = tmp_path / "served"
    sdist = write_sdist(tmp_path / "bigbench-1.0.0.tar.gz", generated_task_jsons())
    (served / "files").mkdir(parents=True)
    (served / "files" / "bigbench-1.0.0.tar.gz").write_bytes(sdist.read_bytes())
    url = http_server(served)

    def publish(sha256):
        (served / "pypi" / "bigbench").mkdir(parents=True, exist_ok=True)
        entry = {"filename": "bigbench-1.0.0.tar.gz", "url": f"{url}/files/bigbench-1.0.0.tar.gz",
                 "size": sdist.stat().st_size, "digests": {"sha256": sha256}}
        (served / "pypi" / "bigbench" / "json").write_text(json.dumps({"releases": {"1.0.0": [entry]}}))

    monkeypatch.setattr(bigbench, "PYPI_JSON_URL", f"{url}/pypi/bigbench/json")
    publish("0" * 64)
    with pytest.raises(DataUnavailable, match="sha256 differs"):
        bigbench.download_sdist(tmp_path / "bad.tar.gz", Retry(attempts=1))
    assert not (tmp_path / "bad.tar.gz").exists()

    publish(hashlib.sha256(sdist.read_bytes()).hexdigest())
    bundle = ensure_bundle("bigbench")
    assert bundle.root == base / "eval_bundle_bigbench" and len(bundle.tasks) == 6
    assert (base / "downloads" / "bigbench-1.0.0.tar.gz").read_bytes() == sdist.read_bytes()
    (served / "files" / "bigbench-1.0.0.tar.gz").unlink()
    assert ensure_bundle("bigbench").root == bundle.root  # built once, no second download
    (bundle.root / "bigbench_source.json").write_text('{"format_version": 0}')
    assert ensure_bundle("bigbench").root == bundle.root  # an old converter's bundle is rebuilt from the cached sdist
    assert json.loads((bundle.root / "bigbench_source.json").read_text())["format_version"] == bigbench.FORMAT_VERSION


def test_offline_without_an_sdist_says_how_to_provide_one(monkeypatch):
    monkeypatch.setenv("FLAXCHAT_OFFLINE", "1")
    with pytest.raises(DataUnavailable, match="place it at <base dir>/downloads/bigbench-1.0.0.tar.gz"):
        ensure_bundle("bigbench")


def test_damaged_sdists_are_explained(tmp_path):
    missing = {k: v for k, v in TASK_JSONS.items() if k != "operators"}
    with pytest.raises(BigBenchError, match=r"lacks .*operators/task.json: it is not the bigbench 1.0.0 sdist"):
        build_bundle(write_sdist(tmp_path / "a.tar.gz", missing), tmp_path / "bundle")
    good = write_sdist(tmp_path / "b.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(BigBenchError, match="not a readable tar.gz"):
        build_bundle(tmp_path / "cut.tar.gz", tmp_path / "bundle")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar at all")
    with pytest.raises(BigBenchError, match="not a readable tar.gz"):
        read_members(tmp_path / "junk.tar.gz", [f"{ROOT}/operators/task.json"])
    bad_json = write_sdist(tmp_path / "c.tar.gz", raw={f"{ROOT}/operators/task.json": b"{oops"})
    with pytest.raises(BigBenchError, match="operators/task.json is not valid JSON"):
        build_bundle(bad_json, tmp_path / "bundle")
    no_input = {**TASK_JSONS, "operators": {**TASK_JSONS["operators"], "examples": [{"target": "1"}]}}
    with pytest.raises(BigBenchError, match="example 0 lacks a string `input`"):
        build_bundle(write_sdist(tmp_path / "d.tar.gz", no_input), tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()  # nothing half-written
    with pytest.raises(BigBenchError, match="no bigbench sdist at"):
        ensure_bundle(str(tmp_path / "nowhere.tar.gz"))
