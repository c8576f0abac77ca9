"""Tokenizer directories: tiktoken ranks file + JSON metadata with a checksum, written atomically."""

import base64
import binascii
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from flaxchat.tokenizer.spec import EncodingSpec

RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "tokenizer.json"
FORMAT = "flaxchat-tokenizer"
FORMAT_VERSION = 1
FIX_HINT = "re-create it with `uv run apps/tok_train` (or point to another saved tokenizer)"


class TokenizerFileError(Exception):
    """A tokenizer file or directory is missing, corrupt or inconsistent."""


def file_error(path, problem: str, hint: str = FIX_HINT) -> TokenizerFileError:
    return TokenizerFileError(f"{path}: {problem}; {hint}")


def encode_ranks(ranks: dict[bytes, int]) -> bytes:
    """tiktoken's own format: one `base64(token) rank` line per token, by rank."""
    lines = (base64.b64encode(tok) + b" " + str(rank).encode() for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]))
    return b"".join(line + b"\n" for line in lines)


def parse_ranks(data: bytes, path, hint: str = FIX_HINT) -> dict[bytes, int]:
    ranks = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            tok_b64, rank_str = line.split()
            tok, rank = base64.b64decode(tok_b64, validate=True), int(rank_str)
        except (ValueError, binascii.Error):
            raise file_error(path, f"line {lineno} is not `base64-token rank`: {line[:80]!r}", hint) from None
        if tok in ranks:
            raise file_error(path, f"line {lineno} repeats token {tok!r}", hint)
        ranks[tok] = rank
    if not ranks:
        raise file_error(path, "the ranks file is empty", hint)
    return ranks


def read_verified(path: Path, expected_sha256: str, hint: str = FIX_HINT) -> bytes:
    """The (gunzipped if .gz) content of `path`, which must hash to expected_sha256."""
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise file_error(path, "file not found", hint) from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise file_error(path, f"cannot read ({e})", hint) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise file_error(path, f"checksum mismatch (sha256 {actual}, expected {expected_sha256}): truncated or modified", hint)
    return data


def read_ranks_file(path: Path, expected_sha256: str, hint: str = FIX_HINT) -> dict[bytes, int]:
    """Read a tiktoken ranks file (optionally gzipped) whose content must hash to expected_sha256."""
    return parse_ranks(read_verified(path, expected_sha256, hint), path, hint)


def save(directory: Path, spec: EncodingSpec) -> None:
    """Write the tokenizer into a temp dir next to `directory`, then swap it in."""
    directory = Path(directory)
    if directory.exists():
        extra = {p.name for p in directory.iterdir()} - {RANKS_FILE, META_FILE}
        if extra:
            raise TokenizerFileError(f"{directory}: refusing to replace a directory holding other files ({sorted(extra)}); choose another directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    ranks_data = encode_ranks(spec.ranks)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "pattern": spec.pattern,
        "bos_token": spec.bos_token,
        "special_tokens": spec.special_tokens,
        "vocab_size": spec.vocab_size,
        "ranks_file": RANKS_FILE,
        "ranks_sha256": hashlib.sha256(ranks_data).hexdigest(),
    }
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        _write_synced(tmp / RANKS_FILE, ranks_data)
        _write_synced(tmp / META_FILE, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode())
        replace_directory(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_directory(src: Path, dst: Path) -> None:
    """Move the finished directory src to dst (same file system) so readers never see a half-written dst.

    An existing dst is moved aside first, put back if the move fails, and removed only afterwards.
    Shared by every artifact written as a directory (tokenizers, model checkpoints, exports).
    """
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent)) / dst.name
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except OSError:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load(directory: Path) -> EncodingSpec:
    directory = Path(directory)
    if not directory.is_dir():
        raise file_error(directory, "no tokenizer directory here")
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise file_error(meta_path, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise file_error(meta_path, f"not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise file_error(meta_path, f"not a {FORMAT} metadata file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise file_error(meta_path, f"format_version {meta.get('format_version')!r} is not supported (this code reads {FORMAT_VERSION})")
    fields = {"name": str, "pattern": str, "bos_token": str, "special_tokens": dict, "vocab_size": int, "ranks_file": str, "ranks_sha256": str}
    for key, typ in fields.items():
        if not isinstance(meta.get(key), typ):
            raise file_error(meta_path, f"field {key!r} is missing or not a {typ.__name__}")
    if not all(isinstance(i, int) for i in meta["special_tokens"].values()):
        raise file_error(meta_path, "special token ids must be integers")
    if Path(meta["ranks_file"]).name != meta["ranks_file"]:
        raise file_error(meta_path, "ranks_file must be a plain file name inside the tokenizer directory")
    ranks = read_ranks_file(directory / meta["ranks_file"], meta["ranks_sha256"])
    try:
        spec = EncodingSpec(meta["name"], meta["pattern"], ranks, meta["special_tokens"], meta["bos_token"])
    except ValueError as e:
        raise file_error(directory, f"inconsistent tokenizer ({e})") from None
    if spec.vocab_size != meta["vocab_size"]:
        raise file_error(meta_path, f"vocab_size says {meta['vocab_size']} but the files define {spec.vocab_size} ids")
    return spec
