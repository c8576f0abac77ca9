"""Downloads with retries, shared by every flaxchat package, and the Hugging Face hub's parquet export.

The generic part (`Retry`, `download_file`, `fetch_json`, `write_atomic`) knows nothing of
eval data; flaxchat-train fetches its pretraining text through it too. A file already present is
never fetched again. Each attempt streams into a temp file beside the target, checks its size
against Content-Length and then its format (`check`), and renames it into place; a failed attempt
waits 2**attempt seconds. Every failure is a DataUnavailable whose message ends with the caller's
advice on providing the file by hand. A machine without network (no DNS, no route, or a refused
connection, e.g. a proxy setting with no proxy behind it) fails at once, and so does every
download while FLAXCHAT_OFFLINE (or the hub's own HF_HUB_OFFLINE) is set, so tests and
air-gapped runs never wait on the network.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flaxchat.evals.errors import DataUnavailable
from flaxchat.tokenizer.paths import base_dir

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
OFFLINE_VARIABLES = ("FLAXCHAT_OFFLINE", "HF_HUB_OFFLINE")


@dataclass(frozen=True)
class Retry:
    """`attempts` tries with `timeout_s` per request, sleeping 2**attempt seconds in between."""

    attempts: int = 5
    timeout_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep


def offline() -> bool:
    """Whether FLAXCHAT_OFFLINE or HF_HUB_OFFLINE forbids every download."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in OFFLINE_VARIABLES)


class _BadDownload(Exception):
    """The body arrived but is wrong (short, or not the expected format): worth another try."""


def _is_offline(error: BaseException) -> bool:
    """No way out to the internet (no DNS, no route, a refused connection), as opposed to a server hiccup."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED)


def _is_permanent(error: BaseException) -> bool:
    """An HTTP answer that another try will not change (404, 403, ...)."""
    return isinstance(error, urllib.error.HTTPError) and 400 <= error.code < 500 and error.code not in (408, 429)


def _request(url: str, timeout_s: float):
    return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "flaxchat"}), timeout=timeout_s)


def _fetch(url: str, tmp: Path, timeout_s: float) -> None:
    with _request(url, timeout_s) as response, open(tmp, "wb") as out:
        expected = response.headers.get("Content-Length")
        size = 0
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            size += len(chunk)
    # http.client returns a short body without complaint when the connection drops early.
    if expected is not None and size != int(expected):
        raise _BadDownload(f"received {size} bytes, Content-Length said {expected}")


def _with_retries(url: str, attempt_once: Callable[[], object], how_to_provide: str, retry: Retry):
    if offline():
        raise DataUnavailable(f"cannot download {url}: offline mode ({'/'.join(OFFLINE_VARIABLES)} is set). {how_to_provide}")
    last_error: BaseException | None = None
    for attempt in range(1, retry.attempts + 1):
        try:
            return attempt_once()
        except (OSError, http.client.HTTPException, ValueError, _BadDownload) as e:
            last_error = e
        if _is_offline(last_error):
            raise DataUnavailable(f"cannot download {url}: the network is unreachable ({last_error}). {how_to_provide}")
        if _is_permanent(last_error):
            raise DataUnavailable(f"cannot download {url}: {last_error}. {how_to_provide}")
        if attempt < retry.attempts:
            logger.warning("attempt %d/%d for %s failed: %s", attempt, retry.attempts, url, last_error)
            retry.sleep(2**attempt)
    raise DataUnavailable(f"cannot download {url} after {retry.attempts} attempts: {last_error}. {how_to_provide}")


def download_file(url: str, dest: Path, how_to_provide: str, check: Callable[[Path], None] | None = None,
                  retry: Retry = Retry()) -> Path:
    """`dest`, downloaded from `url` unless present.

    `check(path)` validates the finished temp file and raises ValueError to reject it (the attempt
    then counts as failed). `how_to_provide` ends every DataUnavailable message.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)

    def once() -> Path:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            _fetch(url, tmp, retry.timeout_s)
            if check is not None:
                check(tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    return _with_retries(url, once, how_to_provide, retry)


def fetch_json(url: str, how_to_provide: str, retry: Retry = Retry()):
    def once():
        with _request(url, retry.timeout_s) as response:
            return json.loads(response.read())

    return _with_retries(url, once, how_to_provide, retry)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same directory and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


# The Hugging Face hub's parquet export -------------------------------------------------------

HUB_URL = "https://huggingface.co"


def task_data_dir() -> Path:
    """Where hub downloads are cached (nanochat's <base>/task_data)."""
    return base_dir() / "task_data"


def _check_parquet(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(-4, os.SEEK_END)
        tail = f.read(4)
    if head != b"PAR1" or tail != b"PAR1":
        raise ValueError("not a parquet file (no PAR1 magic bytes)")


def hub_parquet_files(repo: str, subset: str, split: str, how_to_provide: str, retry: Retry = Retry()) -> list[Path]:
    """The parquet shards of a hub dataset split, downloaded once (nanochat's load_hub_dataset layout).

    Shards go to <base>/task_data/<repo with / as -->/<subset>/<split>/<i:05d>.parquet and a
    manifest.json listing them is written last, so its presence means the download completed.
    """
    shards_dir = task_data_dir() / repo.replace("/", "--") / subset / split
    manifest = shards_dir / "manifest.json"
    if not manifest.exists():
        urls = fetch_json(f"{HUB_URL}/api/datasets/{repo}/parquet/{subset}/{split}", how_to_provide, retry)
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise DataUnavailable(f"the hub lists no parquet shards for {repo} {subset}/{split} (got {urls!r:.200}). "
                                  f"{how_to_provide}")
        names = []
        for i, url in enumerate(urls):
            name = f"{i:05d}.parquet"
            logger.info("downloading %s (%d/%d)", url, i + 1, len(urls))
            download_file(url, shards_dir / name, how_to_provide, _check_parquet, retry)
            names.append(name)
        write_atomic(manifest, json.dumps(names))
    try:
        names = json.loads(manifest.read_text())
    except ValueError as e:
        raise DataUnavailable(f"{manifest} is damaged ({e}): delete {shards_dir} to download again. {how_to_provide}") from None
    return [shards_dir / name for name in names]
