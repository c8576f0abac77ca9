"""The DCLM eval bundle that CORE reads: its layout, its config, and its download.

Layout (nanochat's eval_bundle.zip unpacked):
    core.yaml              icl_tasks: [{label, dataset_uri, num_fewshot: [n], icl_task_type,
                                        continuation_delimiter (default " ")}, ...]
    eval_meta_data.csv     columns "Eval Task" and "Random baseline" (percent), among others
    eval_data/<dataset_uri>  one jsonl per task

`--bundle PATH` always works. Without it the bundle lives at <base>/eval_bundle and is
downloaded once from nanochat's URL when the network allows; the zip is checked (its size
against Content-Length, every member against its CRC-32) and unpacked next to its final place,
then renamed into it, so a half-unpacked bundle is never used. `--bundle bigbench` is the
bundle of CORE's 6 BIG-bench tasks that flaxchat.evals.bigbench builds from the bigbench sdist.
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
import tempfile
import zipfile
from pathlib import Path

import yaml

from flaxchat.evals.bigbench import BIGBENCH_BUNDLE, ensure_bigbench_bundle
from flaxchat.evals.download import download_file
from flaxchat.evals.errors import CoreError
from flaxchat.tokenizer.paths import base_dir

EVAL_BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
# The 22 tasks of nanochat's bundle, in its core.yaml order (to report how much of CORE a bundle covers).
CORE_LABELS = (
    "hellaswag_zeroshot", "jeopardy", "bigbench_qa_wikidata", "arc_easy", "arc_challenge", "copa", "commonsense_qa",
    "piqa", "openbook_qa", "lambada_openai", "hellaswag", "winograd", "winogrande", "bigbench_dyck_languages",
    "agi_eval_lsat_ar", "bigbench_cs_algorithms", "bigbench_operators", "bigbench_repeat_copy_logic", "squad", "coqa",
    "boolq", "bigbench_language_identification",
)
HOW_TO_PROVIDE = (
    f"Download {EVAL_BUNDLE_URL} on a machine with network, unzip it, and pass the eval_bundle directory "
    "(apps/eval --bundle PATH, apps/pretrain --core-bundle PATH) or place it at <base dir>/eval_bundle; "
    f"offline, `{BIGBENCH_BUNDLE}` instead of PATH gives CORE's 6 BIG-bench tasks (6 of 22)."
)


@dataclasses.dataclass(frozen=True)
class CoreTask:
    label: str
    dataset_uri: str
    num_fewshot: int
    task_type: str
    continuation_delimiter: str
    random_baseline: float  # percent


@dataclasses.dataclass(frozen=True)
class Bundle:
    root: Path
    tasks: tuple[CoreTask, ...]

    def data_path(self, task: CoreTask) -> Path:
        return self.root / "eval_data" / task.dataset_uri


def default_bundle_dir() -> Path:
    return base_dir() / "eval_bundle"


def _read_config(root: Path) -> list[dict]:
    path = root / "core.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise CoreError(f"cannot read {path}: {e}") from None
    tasks = config.get("icl_tasks") if isinstance(config, dict) else None
    if not isinstance(tasks, list) or not tasks:
        raise CoreError(f"{path} has no `icl_tasks` list")
    return tasks


def _read_baselines(root: Path) -> dict[str, float]:
    path = root / "eval_meta_data.csv"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return {row["Eval Task"]: float(row["Random baseline"]) for row in rows}
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CoreError(f"cannot read random baselines from {path} (columns 'Eval Task', 'Random baseline'): {e}") from None


def _core_task(entry, baselines: dict[str, float], root: Path) -> CoreTask:
    try:
        label, uri, shots, kind = entry["label"], entry["dataset_uri"], entry["num_fewshot"], entry["icl_task_type"]
        shots = shots[0] if isinstance(shots, list) else shots  # the bundle lists shot counts; nanochat uses the first
        delimiter = entry.get("continuation_delimiter", " ")
    except (KeyError, TypeError, IndexError) as e:
        raise CoreError(f"{root / 'core.yaml'}: task entry {entry!r:.200} lacks {e}") from None
    if kind not in TASK_TYPES:
        raise CoreError(f"{root / 'core.yaml'}: task {label!r} has type {kind!r}; supported: {TASK_TYPES}")
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise CoreError(f"{root / 'core.yaml'}: task {label!r} has num_fewshot {shots!r}")
    if label not in baselines:
        raise CoreError(f"{root / 'eval_meta_data.csv'} has no random baseline for task {label!r}")
    return CoreTask(label, uri, shots, kind, str(delimiter), baselines[label])


def load_bundle(root: str | Path) -> Bundle:
    """Read and check a bundle directory: its config, baselines and every task's data file."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CoreError(f"{root} is not a directory: a CORE bundle is an unpacked eval_bundle. {HOW_TO_PROVIDE}")
    baselines = _read_baselines(root)
    bundle = Bundle(root, tuple(_core_task(e, baselines, root) for e in _read_config(root)))
    missing = [str(bundle.data_path(t)) for t in bundle.tasks if not bundle.data_path(t).is_file()]
    if missing:
        raise CoreError(f"the bundle at {root} lacks data file(s): {', '.join(missing)}")
    return bundle


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            names = z.namelist()
    except zipfile.BadZipFile as e:
        raise ValueError(f"not a zip file: {e}") from None
    if bad is not None:
        raise ValueError(f"member {bad} fails its CRC check")
    if "eval_bundle/core.yaml" not in names:
        raise ValueError("the zip has no eval_bundle/core.yaml")


def ensure_bundle(path: str | Path | None = None) -> Bundle:
    """The bundle at `path`, else at <base>/eval_bundle, downloading and unpacking it there if needed.

    `path` "bigbench" or a path to the bigbench sdist (*.tar.gz) means CORE's 6 BIG-bench tasks,
    built once from that sdist (flaxchat.evals.bigbench)."""
    if path == BIGBENCH_BUNDLE:
        return load_bundle(ensure_bigbench_bundle())
    if path is not None and str(path).endswith(".tar.gz"):
        return load_bundle(ensure_bigbench_bundle(path))
    if path is not None:
        return load_bundle(path)
    target = default_bundle_dir()
    if not target.exists():
        archive = download_file(EVAL_BUNDLE_URL, target.with_name("eval_bundle.zip"), HOW_TO_PROVIDE, _check_zip)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".eval_bundle.") as tmp:
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
            if not target.exists():  # another process may have finished first
                shutil.move(str(Path(tmp) / "eval_bundle"), target)
        archive.unlink()
    try:
        return load_bundle(target)
    except CoreError as e:
        raise CoreError(f"{e} (delete {target} to download the bundle again)") from None
