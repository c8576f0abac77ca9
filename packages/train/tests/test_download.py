"""The shard downloader against a local HTTP server on 127.0.0.1 (no internet needed)."""

import socket
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flaxchat.train.data import download
from flaxchat.train.data.download import CLIMBMIX_MAX_SHARD, Retry, download_file, download_shards, download_tinystories
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.shards import shard_name, split_shards, write_shard
from flaxchat.train.data.sources import read_documents

TEXTS = [f"climbmix-like document {i}" for i in range(50)]


class Server:
    """Serves scripted answers per path; each request takes the next answer, the last one repeats."""

    def __init__(self):
        self.plan: dict[str, list[tuple[str, bytes | int]]] = {}
        self.requests: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                answers = server.plan.get(self.path)
                if not answers:
                    self.send_error(404)
                    return
                kind, payload = answers.pop(0) if len(answers) > 1 else answers[0]
                if kind == "status":
                    self.send_error(payload)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                # "truncate": promise the whole body, send half, and hang up (HTTP/1.0 closes after).
                self.wfile.write(payload if kind == "ok" else payload[: len(payload) // 2])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def shard_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "shard.parquet"
    write_shard(path, TEXTS)
    return path.read_bytes()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    for name in ("FLAXCHAT_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def retry(sleeps):
    return Retry(timeout_s=5, sleep=sleeps.append)


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


def test_download_shards_fetches_train_and_val(server, shard_bytes, tmp_path, retry, sleeps):
    names = [shard_name(0), shard_name(1), shard_name(CLIMBMIX_MAX_SHARD)]
    for name in names:
        server.plan[f"/{name}"] = [("ok", shard_bytes)]
    paths = download_shards(2, tmp_path, workers=2, base_url=server.url, retry=retry)
    assert [p.name for p in paths] == names == ["shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"]
    assert leftovers(tmp_path) == names
    assert all(p.read_bytes() == shard_bytes for p in paths)
    assert split_shards(paths, "val") == [tmp_path / "shard_06542.parquet"]
    assert list(read_documents(paths[0])) == TEXTS
    assert sleeps == []


def test_retry_after_a_failing_attempt(server, shard_bytes, tmp_path, retry, sleeps):
    server.plan["/shard_00000.parquet"] = [("status", 503), ("ok", shard_bytes)]
    dest = tmp_path / "shard_00000.parquet"
    assert download_file(f"{server.url}/shard_00000.parquet", dest, download._check_shard, retry)
    assert server.requests["/shard_00000.parquet"] == 2
    assert sleeps == [2]
    assert dest.read_bytes() == shard_bytes
    assert leftovers(tmp_path) == [dest.name]


def test_truncated_body_is_rejected_and_leaves_nothing(server, shard_bytes, tmp_path, retry, sleeps):
    server.plan["/shard_00000.parquet"] = [("truncate", shard_bytes)]
    with pytest.raises(DataSourceError, match="after 5 attempts.*Content-Length.*--data PATH"):
        download_file(f"{server.url}/shard_00000.parquet", tmp_path / "shard_00000.parquet", None, retry)
    assert server.requests["/shard_00000.parquet"] == 5
    assert sleeps == [2, 4, 8, 16]
    assert leftovers(tmp_path) == []


def test_truncated_then_complete(server, shard_bytes, tmp_path, retry, sleeps):
    server.plan["/shard_00001.parquet"] = [("truncate", shard_bytes), ("ok", shard_bytes)]
    dest = tmp_path / "shard_00001.parquet"
    assert download_file(f"{server.url}/shard_00001.parquet", dest, download._check_shard, retry)
    assert sleeps == [2]
    assert dest.read_bytes() == shard_bytes


def test_body_that_is_not_parquet_is_rejected(server, tmp_path, sleeps):
    server.plan["/shard_00000.parquet"] = [("ok", b"<html>an error page</html>")]
    with pytest.raises(DataSourceError, match="after 2 attempts.*not a readable parquet file"):
        download_file(
            f"{server.url}/shard_00000.parquet",
            tmp_path / "s.parquet",
            download._check_shard,
            Retry(attempts=2, timeout_s=5, sleep=sleeps.append),
        )
    assert leftovers(tmp_path) == []


def test_not_found_is_not_retried(server, tmp_path, retry, sleeps):
    with pytest.raises(DataSourceError, match="404"):
        download_shards(1, tmp_path, base_url=server.url, retry=retry)
    assert sleeps == []
    assert set(server.requests.values()) == {1}
    assert leftovers(tmp_path) == []


def test_files_already_present_are_skipped(server, tmp_path, retry):
    for i in (0, 1, CLIMBMIX_MAX_SHARD):
        (tmp_path / shard_name(i)).write_bytes(b"already here")
    paths = download_shards(2, tmp_path, base_url=server.url, retry=retry)
    assert server.requests == {}
    assert all(p.read_bytes() == b"already here" for p in paths)


def test_only_missing_files_are_fetched(server, shard_bytes, tmp_path, retry):
    (tmp_path / shard_name(0)).write_bytes(b"already here")
    server.plan["/shard_00001.parquet"] = [("ok", shard_bytes)]
    server.plan[f"/{shard_name(CLIMBMIX_MAX_SHARD)}"] = [("ok", shard_bytes)]
    download_shards(2, tmp_path, base_url=server.url, retry=retry)
    assert server.requests == {"/shard_00001.parquet": 1, "/shard_06542.parquet": 1}


def test_offline_fails_fast_with_advice(tmp_path, monkeypatch, retry, sleeps):
    def no_dns(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    with pytest.raises(DataSourceError, match="network is unreachable.*--data PATH"):
        download_shards(1, tmp_path, retry=retry)
    assert sleeps == []
    assert leftovers(tmp_path) == []


def test_refused_connection_counts_as_offline(tmp_path, retry, sleeps):
    with socket.socket() as s:  # a port that was free a moment ago refuses connections
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataSourceError, match="network is unreachable.*refused.*--data PATH"):
        download_tinystories("val", dest=tmp_path, base_url=f"http://127.0.0.1:{port}", retry=retry)
    assert sleeps == []
    assert leftovers(tmp_path) == []


def test_offline_mode_never_touches_the_network(server, tmp_path, retry, monkeypatch):
    monkeypatch.setenv("FLAXCHAT_OFFLINE", "1")
    with pytest.raises(DataSourceError, match="offline mode.*--data PATH"):
        download_shards(1, tmp_path, base_url=server.url, retry=retry)
    assert server.requests == {}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("count", [0, -2, CLIMBMIX_MAX_SHARD + 1])
def test_bad_shard_count(tmp_path, count):
    with pytest.raises(DataSourceError, match="number of ClimbMix train shards"):
        download_shards(count, tmp_path)


def test_tinystories_download(server, tmp_path, retry):
    text = "Once there was a cat.\n<|endoftext|>\nThe end of another story.\n<|endoftext|>\n"
    server.plan["/TinyStories-valid.txt"] = [("ok", text.encode())]
    path = download_tinystories("val", dest=tmp_path, base_url=server.url, retry=retry)
    assert path == tmp_path / "TinyStories-valid.txt"
    assert list(read_documents(path)) == ["Once there was a cat.", "The end of another story."]


def test_tinystories_without_separators_is_rejected(server, tmp_path, sleeps):
    server.plan["/TinyStories-train.txt"] = [("ok", b"<html>rate limited</html>")]
    with pytest.raises(DataSourceError, match="does not look like TinyStories"):
        download_tinystories("train", dest=tmp_path, base_url=server.url, retry=Retry(attempts=1, sleep=sleeps.append))
    assert leftovers(tmp_path) == []
