"""Downloads of the real pretraining text: nanochat's ClimbMix shards and TinyStories.

Like nanochat's downloader: a file already present is skipped; otherwise up to
5 attempts, each streaming the body in 1 MiB chunks into a temp file beside
the target, checking it (size against Content-Length, then its format) and
renaming it into place. A failed attempt deletes its partial file and waits
2**attempt seconds. A machine without network fails at once with a
DataSourceError that says to pass a local path instead.
"""

import errno
import http.client
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from flaxchat.tokenizer.paths import base_dir
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.shards import check_split, open_text_parquet, shard_name

logger = logging.getLogger(__name__)

CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_MAX_SHARD = 6542  # shards 0..6541 are train; 6542 is always the val shard
TINYSTORIES_URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main"
TINYSTORIES_FILES = {"train": "TinyStories-train.txt", "val": "TinyStories-valid.txt"}
END_OF_TEXT = "<|endoftext|>"  # TinyStories' document separator, on a line of its own
CHUNK_BYTES = 1 << 20
USE_LOCAL = "Download it on a machine with network access and pass its path with --data PATH."


@dataclass(frozen=True)
class Retry:
    """How hard to try: `attempts` tries with `timeout_s` per request, sleeping 2**attempt s between."""

    attempts: int = 5
    timeout_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep


def climbmix_dir() -> Path:
    return base_dir() / "data" / "climbmix"


def tinystories_dir() -> Path:
    return base_dir() / "data" / "tinystories"


class _BadDownload(Exception):
    """The body arrived but is wrong (short, or not the expected format): worth another try."""


def _is_offline(error: BaseException) -> bool:
    """No route to the internet at all (no DNS, no network), as opposed to a server hiccup."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)


def _is_permanent(error: BaseException) -> bool:
    """An HTTP answer that another try will not change (404, 403, ...)."""
    return isinstance(error, urllib.error.HTTPError) and 400 <= error.code < 500 and error.code not in (408, 429)


def _fetch(url: str, tmp: Path, timeout_s: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "flaxchat"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response, open(tmp, "wb") as out:
        expected = response.headers.get("Content-Length")
        size = 0
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            size += len(chunk)
    # http.client returns a short body without complaint when the connection drops early.
    if expected is not None and size != int(expected):
        raise _BadDownload(f"received {size} bytes, Content-Length said {expected}")


def download_file(url: str, dest: Path, check: Callable[[Path], None] | None = None, retry: Retry = Retry()) -> bool:
    """Download `url` to `dest` unless it is already there; return whether anything was downloaded.

    `check(path)` validates the finished temp file; it raises to reject it.
    """
    dest = Path(dest)
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error: BaseException | None = None
    for attempt in range(1, retry.attempts + 1):
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f"{dest.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            _fetch(url, tmp, retry.timeout_s)
            if check is not None:
                check(tmp)
            os.replace(tmp, dest)
            return True
        except (OSError, http.client.HTTPException, DataSourceError, _BadDownload) as e:
            last_error = e
        finally:
            tmp.unlink(missing_ok=True)
        if _is_offline(last_error):
            raise DataSourceError(f"cannot download {url}: the network is unreachable ({last_error}). {USE_LOCAL}")
        if _is_permanent(last_error):
            raise DataSourceError(f"cannot download {url}: {last_error}. {USE_LOCAL}")
        if attempt < retry.attempts:
            logger.warning("attempt %d/%d for %s failed: %s", attempt, retry.attempts, url, last_error)
            retry.sleep(2**attempt)
    raise DataSourceError(f"cannot download {url} after {retry.attempts} attempts: {last_error}. {USE_LOCAL}")


def _check_shard(path: Path) -> None:
    open_text_parquet(path)


def download_shards(
    num_train: int, dest: Path, workers: int = 4, base_url: str = CLIMBMIX_URL, retry: Retry = Retry()
) -> list[Path]:
    """Make sure ClimbMix train shards 0..num_train-1 and the val shard are in `dest`; return them sorted.

    `num_train=-1` means all train shards. The val shard sorts last, so the
    split rule of `shards.split_shards` makes it val.
    """
    if num_train == -1:
        num_train = CLIMBMIX_MAX_SHARD
    if not 1 <= num_train <= CLIMBMIX_MAX_SHARD:
        raise DataSourceError(
            f"number of ClimbMix train shards must be 1..{CLIMBMIX_MAX_SHARD} or -1 (all), not {num_train}"
        )
    dest = Path(dest)
    paths = [dest / shard_name(i) for i in (*range(num_train), CLIMBMIX_MAX_SHARD)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        logger.info("Downloading %d ClimbMix shard(s) to %s with %d worker(s)", len(missing), dest, workers)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = {pool.submit(download_file, f"{base_url}/{p.name}", p, _check_shard, retry): p for p in missing}
            try:
                for done, job in enumerate(as_completed(jobs), 1):
                    job.result()
                    logger.info("[%d/%d] %s", done, len(missing), jobs[job].name)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    return paths


def _check_tinystories(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(CHUNK_BYTES)
    if END_OF_TEXT.encode() not in head:
        raise DataSourceError(
            f"{path} does not look like TinyStories text: no {END_OF_TEXT} separator in its first MiB"
        )


def download_tinystories(
    split: str, dest: Path | None = None, base_url: str = TINYSTORIES_URL, retry: Retry = Retry()
) -> Path:
    """Make sure the TinyStories file for `split` is in `dest` (default `tinystories_dir()`); return its path."""
    check_split(split)
    path = Path(dest or tinystories_dir()) / TINYSTORIES_FILES[split]
    if download_file(f"{base_url}/{path.name}", path, _check_tinystories, retry):
        logger.info("Downloaded %s", path)
    return path
