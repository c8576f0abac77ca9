"""CORE's six BIG-bench tasks as a bundle in the DCLM layout, built offline from the bigbench sdist.

Six of CORE's 22 tasks come from BIG-bench: qa_wikidata, dyck_languages, cs_algorithms, operators,
repeat_copy_logic and language_identification. The DCLM bundle that nanochat downloads holds them as
MosaicML llm-foundry made them (scripts/eval/local_data/*/bigbench_*.jsonl) from the Hugging Face
copy of BIG-bench; the `bigbench` 1.0.0 sdist on PyPI ships the same task.json files. This module
reads them straight out of the tar.gz (one pass, nothing extracted) and rebuilds llm-foundry's
records the way that copy was made (bigbench.api.json_task and bigbench.bbseqio):

  examples    exact duplicates dropped (same JSON), order kept; then bbseqio's split: shuffled with
              random.seed(42), the last max(20%, 16) are validation. Records are the train parts of
              every subtask (in sorted subtask order), then their validation parts.
  prompt      task_prefix + example_input_prefix + input + example_output_prefix (BIG-bench's
              defaults "\\nQ: " and "\\nA: "); answer: `target` (the first, if a list) or the first
              best-scoring key of `target_scores`.
  language_modeling  {"context": prompt stripped, "continuation": answer stripped}
  multiple_choice    {"query": (task_prefix + example_input_prefix + input) stripped + "\\nA. ..\\nB. ..\\n
              C. ..\\nD. ..\\nAnswer: ", "choices": ["A", "B", "C", "D"], "gold": the answer's letter}:
              the answer and 3 of the other languages. llm-foundry drew those 3 with a script it did
              not publish; here they are drawn with random.Random(1234), so language_identification
              has llm-foundry's items, order, sentences and answers but other distractors.

core.yaml and eval_meta_data.csv carry the real bundle's entries for these tasks (labels,
dataset_uri, 10-shot, task types, the default " " delimiter, random baselines), so load_bundle()
reads the result unchanged. It is 6 of CORE's 22 tasks, and reported as such, never as CORE.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import random
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from flaxchat.evals.download import Retry, download_file, fetch_json, write_atomic
from flaxchat.evals.errors import BigBenchError, DataUnavailable
from flaxchat.tokenizer.files import replace_directory, sha256_file
from flaxchat.tokenizer.paths import base_dir

logger = logging.getLogger(__name__)

BIGBENCH_BUNDLE = "bigbench"  # the name that selects this bundle (apps/eval --bundle, apps/pretrain --core-bundle)
VERSION = "1.0.0"
SDIST_NAME = f"bigbench-{VERSION}.tar.gz"
PYPI_JSON_URL = "https://pypi.org/pypi/bigbench/json"
TASKS_ROOT = f"bigbench-{VERSION}/bigbench/benchmark_tasks"
SOURCE_FILE = "bigbench_source.json"
FORMAT_VERSION = 1  # bump when the records change: bundles written by another version are rebuilt
SPLIT_SEED = 42  # bbseqio's SPLIT_SHUFFLE_SEED
MIN_VALIDATION = 16  # bbseqio's min_validation_examples
DISTRACTOR_SEED = 1234
NUM_DISTRACTORS = 3
LETTERS = "ABCD"
HOW_TO_PROVIDE = (
    f"Download {SDIST_NAME} from https://pypi.org/project/bigbench/{VERSION}/#files on a machine with network and "
    f"place it at <base dir>/downloads/{SDIST_NAME}, or pass its path instead of `{BIGBENCH_BUNDLE}` "
    "(apps/eval --bundle PATH, apps/pretrain --core-bundle PATH)."
)
META_COLUMNS = ("Eval Task", "Task Category", "Task Type", "#shots", "#datapoints", "Random baseline",
                "Centered Metric?", "Description")


@dataclasses.dataclass(frozen=True)
class BigBenchTask:
    """One of CORE's BIG-bench tasks: where its JSON is in the sdist, and its entry in the real bundle."""

    name: str  # directory under bigbench/benchmark_tasks
    dataset_uri: str
    task_type: str  # "language_modeling" | "multiple_choice"
    category: str
    random_baseline: float  # percent, as the real eval_meta_data.csv
    subtasks: tuple[str, ...] = ()  # subdirectories with their own task.json, sorted as BIG-bench loads them
    num_fewshot: int = 10

    @property
    def label(self) -> str:
        return f"bigbench_{self.name}"

    @property
    def members(self) -> tuple[str, ...]:
        """The task.json files in the sdist whose examples make the records."""
        parts = [f"{self.name}/{sub}" for sub in self.subtasks] or [self.name]
        return tuple(f"{TASKS_ROOT}/{part}/task.json" for part in parts)

    @property
    def description_member(self) -> str:
        return f"{TASKS_ROOT}/{self.name}/task.json"


LM, MC = "language_modeling", "multiple_choice"
TASKS = (  # in the real core.yaml's order
    BigBenchTask("qa_wikidata", "world_knowledge/bigbench_qa_wikidata.jsonl", LM, "world knowledge", 0.0),
    BigBenchTask("dyck_languages", "symbolic_problem_solving/bigbench_dyck_languages.jsonl", LM,
                 "symbolic problem solving", 0.0),
    BigBenchTask("cs_algorithms", "symbolic_problem_solving/bigbench_cs_algorithms.jsonl", LM,
                 "symbolic problem solving", 0.0, subtasks=("lcs", "valid_parentheses")),
    BigBenchTask("operators", "symbolic_problem_solving/bigbench_operators.jsonl", LM, "symbolic problem solving", 0.0),
    BigBenchTask("repeat_copy_logic", "symbolic_problem_solving/bigbench_repeat_copy_logic.jsonl", LM,
                 "symbolic problem solving", 0.0),
    # 9.1 is the real bundle's baseline (1 in 11, BIG-bench's choice count), although its items offer 4 choices.
    BigBenchTask("language_identification", "language_understanding/bigbench_language_identification.jsonl", MC,
                 "language understanding", 9.1),
)


# Reading the sdist ------------------------------------------------------------------------------
def read_members(sdist: Path, names: Sequence[str]) -> dict[str, Any]:
    """The parsed JSON of each named member, read in one pass over the tar.gz."""
    wanted, found = set(names), {}
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    found[member.name] = tar.extractfile(member).read()
                    if len(found) == len(wanted):
                        break
    except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
        raise BigBenchError(f"{sdist} is not a readable tar.gz ({e}): delete it and download it again. "
                            f"{HOW_TO_PROVIDE}") from None
    missing = sorted(wanted - found.keys())
    if missing:
        raise BigBenchError(f"{sdist} lacks {', '.join(missing)}: it is not the bigbench {VERSION} sdist. {HOW_TO_PROVIDE}")
    parsed = {}
    for name, data in found.items():
        try:
            parsed[name] = json.loads(data)
        except ValueError as e:
            raise BigBenchError(f"{sdist}: {name} is not valid JSON ({e}). {HOW_TO_PROVIDE}") from None
    return parsed


def _examples(task_json: Any, member: str) -> list[dict]:
    """The task's distinct examples in file order (BIG-bench's JsonTask drops exact duplicates)."""
    examples = task_json.get("examples") if isinstance(task_json, dict) else None
    if not isinstance(examples, list) or not examples:
        raise BigBenchError(f"{member} has no `examples` list")
    seen, distinct = set(), []
    for i, example in enumerate(examples):
        if not isinstance(example, dict) or not isinstance(example.get("input"), str) or not (
                "target" in example or isinstance(example.get("target_scores"), dict)):
            raise BigBenchError(f"{member}: example {i} lacks a string `input` and a `target` or `target_scores`")
        key = json.dumps(example)
        if key not in seen:
            seen.add(key)
            distinct.append(example)
    return distinct


def _split(examples: list[dict]) -> tuple[list[dict], list[dict]]:
    """bbseqio's train/validation split. (bbseqio refuses tasks of at most 16 examples; here those are all validation.)"""
    shuffled = list(examples)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    cut = max(len(shuffled) - max(int(0.2 * len(shuffled)), MIN_VALIDATION), 0)
    return shuffled[:cut], shuffled[cut:]


# Records ----------------------------------------------------------------------------------------
def _answer(example: dict, member: str) -> str:
    if "target" in example:
        target = example["target"]
        target = target[0] if isinstance(target, list) and target else target
    else:
        scores = example["target_scores"]
        best = max(scores.values())
        target = next(choice for choice, score in scores.items() if score == best)
    if not isinstance(target, str):
        raise BigBenchError(f"{member}: example {example['input'][:60]!r} has no string target ({target!r})")
    return target


def _prefixes(task_json: dict) -> tuple[str, str, str]:
    return (str(task_json.get("task_prefix", "")), task_json.get("example_input_prefix", "\nQ: "),
            task_json.get("example_output_prefix", "\nA: "))


def lm_record(task_json: dict, example: dict, member: str) -> dict[str, str]:
    if "target_scores" in example and task_json.get("append_choices_to_input", True):
        raise BigBenchError(f"{member} appends its choices to the input, which llm-foundry's language-modeling "
                            "records do not contain")
    task_prefix, input_prefix, output_prefix = _prefixes(task_json)
    context = task_prefix + input_prefix + example["input"] + output_prefix
    return {"context": context.strip(), "continuation": _answer(example, member).strip()}


def mc_record(task_json: dict, example: dict, member: str, rng: random.Random) -> dict[str, Any]:
    scores = example.get("target_scores")
    if not isinstance(scores, dict):
        raise BigBenchError(f"{member}: example {example['input'][:60]!r} has no `target_scores`")
    answer = _answer(example, member)
    others = [choice for choice in scores if choice != answer]
    if len(others) < NUM_DISTRACTORS:
        raise BigBenchError(f"{member}: example {example['input'][:60]!r} has {len(scores)} choices; "
                            f"{NUM_DISTRACTORS + 1} are needed")
    options = rng.sample(others, NUM_DISTRACTORS) + [answer]
    rng.shuffle(options)
    task_prefix, input_prefix, _ = _prefixes(task_json)
    lines = [f"{letter}. {option}" for letter, option in zip(LETTERS, options)]
    query = "\n".join([(task_prefix + input_prefix + example["input"]).strip(), *lines, "Answer: "])
    return {"query": query, "choices": list(LETTERS), "gold": options.index(answer)}


def task_records(task: BigBenchTask, jsons: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's records in llm-foundry's order: every subtask's train part, then every validation part."""
    parts = [(jsons[m], m, _split(_examples(jsons[m], m))) for m in task.members]
    ordered = [(j, m, ex) for j, m, (train, _) in parts for ex in train]
    ordered += [(j, m, ex) for j, m, (_, validation) in parts for ex in validation]
    if task.task_type == LM:
        return [lm_record(j, ex, m) for j, m, ex in ordered]
    rng = random.Random(DISTRACTOR_SEED)
    return [mc_record(j, ex, m, rng) for j, m, ex in ordered]


# The bundle -------------------------------------------------------------------------------------
def _core_yaml() -> str:
    entries = [{"label": t.label, "dataset_uri": t.dataset_uri, "num_fewshot": [t.num_fewshot],
                "icl_task_type": t.task_type} for t in TASKS]
    return yaml.safe_dump({"icl_tasks": entries}, sort_keys=False, allow_unicode=True)


def _meta_csv(counts: dict[str, int], descriptions: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=META_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for t in TASKS:
        writer.writerow({"Eval Task": t.label, "Task Category": t.category, "Task Type": t.task_type.replace("_", " "),
                         "#shots": t.num_fewshot, "#datapoints": counts[t.label], "Random baseline": t.random_baseline,
                         "Centered Metric?": "", "Description": descriptions[t.label]})
    return out.getvalue()


def build_bundle(sdist: str | Path, dest: str | Path) -> dict[str, int]:
    """Write the 6-task bundle from `sdist` to `dest` (replacing it atomically); returns records per task."""
    sdist, dest = Path(sdist).expanduser(), Path(dest)
    names = {m for t in TASKS for m in (*t.members, t.description_member)}
    jsons = read_members(sdist, sorted(names))
    records = {t.label: task_records(t, jsons) for t in TASKS}
    descriptions = {t.label: str(jsons[t.description_member].get("description", "")) for t in TASKS}
    counts = {label: len(rows) for label, rows in records.items()}
    source = {"source": f"PyPI bigbench {VERSION} sdist", "sdist_sha256": sha256_file(sdist),
              "format_version": FORMAT_VERSION, "records": counts,
              "note": "6 of CORE's 22 tasks; language_identification's distractors are flaxchat's draw, not llm-foundry's"}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        for t in TASKS:
            lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records[t.label])
            write_atomic(tmp / "eval_data" / t.dataset_uri, "".join(lines))
        write_atomic(tmp / "core.yaml", _core_yaml())
        write_atomic(tmp / "eval_meta_data.csv", _meta_csv(counts, descriptions))
        write_atomic(tmp / SOURCE_FILE, json.dumps(source, indent=2) + "\n")
        replace_directory(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def default_bigbench_dir() -> Path:
    return base_dir() / "eval_bundle_bigbench"


def default_sdist_path() -> Path:
    return base_dir() / "downloads" / SDIST_NAME


def download_sdist(dest: Path, retry: Retry = Retry()) -> Path:
    """The sdist at `dest`, downloaded from PyPI (URL, size and sha256 from its JSON API) unless present."""
    if dest.exists():
        return dest
    release = fetch_json(PYPI_JSON_URL, HOW_TO_PROVIDE, retry)
    files = release.get("releases", {}).get(VERSION, []) if isinstance(release, dict) else []
    sdist = next((f for f in files if isinstance(f, dict) and f.get("filename") == SDIST_NAME), None)
    try:
        url, size, sha256 = sdist["url"], int(sdist["size"]), sdist["digests"]["sha256"]
    except (TypeError, KeyError, ValueError):
        raise DataUnavailable(f"{PYPI_JSON_URL} lists no {SDIST_NAME} with a url, size and sha256. {HOW_TO_PROVIDE}") from None

    def check(path: Path) -> None:
        if path.stat().st_size != size:
            raise ValueError(f"{path.stat().st_size} bytes, PyPI says {size}")
        if sha256_file(path) != sha256:
            raise ValueError(f"sha256 differs from PyPI's {sha256}")

    logger.info("downloading %s (%.0f MB) from PyPI", SDIST_NAME, size / 1e6)
    return download_file(url, dest, HOW_TO_PROVIDE, check, retry)


def _is_current(bundle_dir: Path) -> bool:
    try:
        return json.loads((bundle_dir / SOURCE_FILE).read_text())["format_version"] == FORMAT_VERSION
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_bigbench_bundle(sdist: str | Path | None = None) -> Path:
    """<base>/eval_bundle_bigbench, built once from `sdist` (default: <base>/downloads/bigbench-1.0.0.tar.gz,
    downloaded from PyPI if missing). A bundle written by another converter version is rebuilt."""
    dest = default_bigbench_dir()
    if _is_current(dest):
        return dest
    path = Path(sdist).expanduser() if sdist is not None else download_sdist(default_sdist_path())
    if not path.is_file():
        raise BigBenchError(f"no bigbench sdist at {path}. {HOW_TO_PROVIDE}")
    logger.info("building CORE's 6 BIG-bench tasks from %s into %s", path, dest)
    counts = build_bundle(path, dest)
    logger.info("records: %s", ", ".join(f"{label} {n}" for label, n in counts.items()))
    return dest
