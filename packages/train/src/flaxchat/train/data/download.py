"""Downloads of the real pretraining text: nanochat's ClimbMix shards and TinyStories.

The fetching itself is flaxchat.evals.download's: a file already present is
skipped; otherwise up to 5 attempts, each streaming into a temp file beside the
target, checking its size and format and renaming it into place, 2**attempt
seconds apart. No network, or FLAXCHAT_OFFLINE set, fails at once. Every
failure is a DataSourceError that says to pass a local path instead.
"""

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from flaxchat.evals import download as shared
from flaxchat.evals.download import Retry
from flaxchat.evals.errors import DataUnavailable
from flaxchat.tokenizer.paths import base_dir
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.shards import check_split, open_text_parquet, shard_name

logger = logging.getLogger(__name__)

CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_MAX_SHARD = 6542  # shards 0..6541 are train; 6542 is always the val shard
TINYSTORIES_URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main"
TINYSTORIES_FILES = {"train": "TinyStories-train.txt", "val": "TinyStories-valid.txt"}
END_OF_TEXT = "<|endoftext|>"  # TinyStories' document separator, on a line of its own
SNIFF_BYTES = 1 << 20  # how much of a TinyStories download must show a separator
USE_LOCAL = "Download it on a machine with network access and pass its path with --data PATH."


def climbmix_dir() -> Path:
    return base_dir() / "data" / "climbmix"


def tinystories_dir() -> Path:
    return base_dir() / "data" / "tinystories"


def download_file(url: str, dest: Path, check: Callable[[Path], None] | None = None, retry: Retry = Retry()) -> bool:
    """Download `url` to `dest` unless it is already there; return whether anything was downloaded.

    `check(path)` validates the finished temp file; it raises ValueError to reject it.
    """
    dest = Path(dest)
    if dest.exists():
        return False
    try:
        shared.download_file(url, dest, USE_LOCAL, check, retry)
    except DataUnavailable as e:
        raise DataSourceError(str(e)) from None
    return True


def _check_shard(path: Path) -> None:
    try:
        open_text_parquet(path)
    except DataSourceError as e:  # the downloader retries on ValueError
        raise ValueError(str(e)) from None


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
        head = f.read(SNIFF_BYTES)
    if END_OF_TEXT.encode() not in head:
        raise ValueError(f"{path} does not look like TinyStories text: no {END_OF_TEXT} separator in its first MiB")


def download_tinystories(
    split: str, dest: Path | None = None, base_url: str = TINYSTORIES_URL, retry: Retry = Retry()
) -> Path:
    """Make sure the TinyStories file for `split` is in `dest` (default `tinystories_dir()`); return its path."""
    check_split(split)
    path = Path(dest or tinystories_dir()) / TINYSTORIES_FILES[split]
    if download_file(f"{base_url}/{path.name}", path, _check_tinystories, retry):
        logger.info("Downloaded %s", path)
    return path
