"""The exported model on disk: a `NAME.litert/` directory, and the signature contract it carries.

    NAME.litert/
        model.tflite     LiteRT flatbuffer: signatures `decode` and one `prefill` per length
        tokenizer/       the tokenizer files (flaxchat.tokenizer format)
        config.json      model config, cache length, prefill lengths, quantization, state shapes
        manifest.json    format, version, and the sha256 + size of every file above

Signatures (LiteRT's LLM conventions): inputs `tokens` (1, T) int32, `input_pos` (T,) int32 and
the recurrent state; outputs `logits` (1, vocab) fp32 at the last token and the updated state.
The state is `prev_embedding` (the smear's previous token embedding) and per layer `k_cache_i`,
`v_cache_i`. Every token of a call is real (no padding) and input_pos must be consecutive: the
chunk is written at input_pos[0] .. input_pos[0] + T - 1.

This module needs no jax: both the converter (writing) and the runner (reading) use it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flaxchat.export.errors import PackageError
from flaxchat.tokenizer import Tokenizer, TokenizerFileError
from flaxchat.tokenizer.files import replace_directory, sha256_file

FORMAT = "flaxchat-litert"
FORMAT_VERSION = 1
SUFFIX = ".litert"
MODEL_FILE = "model.tflite"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
TOKENIZER_DIR = "tokenizer"
QUANTIZATIONS = ("fp32", "int8", "int8-weight-only")
DECODE = "decode"
TOKENS, INPUT_POS, LOGITS, PREV_EMBEDDING = "tokens", "input_pos", "logits", "prev_embedding"
REEXPORT = "re-export it with `uv run apps/export`"


def state_names(n_layer: int) -> list[str]:
    """The recurrent state tensors, in signature order (inputs after tokens/input_pos, outputs after logits)."""
    return [PREV_EMBEDDING, *(f"k_cache_{i}" for i in range(n_layer)), *(f"v_cache_{i}" for i in range(n_layer))]


def prefill_signature(length: int, prefill_lengths: tuple[int, ...]) -> str:
    """`prefill` when there is one length, else `prefill_<T>` (LiteRT's naming for several buckets)."""
    return "prefill" if len(prefill_lengths) == 1 else f"prefill_{length}"


@dataclasses.dataclass(frozen=True)
class PackageConfig:
    """What config.json holds about an exported model."""

    model: dict[str, Any]  # GPTConfig.to_dict() of the exported model
    max_len: int  # KV cache positions: prompt + reply must fit
    prefill_lengths: tuple[int, ...]  # ascending
    quantization: str  # one of QUANTIZATIONS
    state_shapes: dict[str, tuple[int, ...]]  # state name -> shape, as the signatures take it
    source: dict[str, Any] = dataclasses.field(default_factory=dict)  # checkpoint name and metadata

    @property
    def n_layer(self) -> int:
        return int(self.model["n_layer"])

    @property
    def vocab_size(self) -> int:
        return int(self.model["vocab_size"])

    @property
    def signatures(self) -> dict[str, int]:
        """Signature name -> tokens per call."""
        names = {prefill_signature(t, self.prefill_lengths): t for t in self.prefill_lengths}
        return {**names, DECODE: 1}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["prefill_lengths"] = list(self.prefill_lengths)
        data["state_shapes"] = {k: list(v) for k, v in self.state_shapes.items()}
        return data

    @classmethod
    def from_dict(cls, data: Any, where: Path) -> "PackageConfig":
        def bad(problem: str) -> PackageError:
            return PackageError(f"{where}: {problem}; {REEXPORT}")

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        fields = {f.name for f in dataclasses.fields(cls)}
        if set(data) != fields:
            raise bad(f"expected the keys {sorted(fields)}, found {sorted(data)}")
        model = data["model"]
        if not isinstance(model, dict) or not all(_positive_int(model.get(k)) for k in ("n_layer", "vocab_size")):
            raise bad("'model' must be a model config with positive n_layer and vocab_size")
        lengths = data["prefill_lengths"]
        if not isinstance(lengths, list) or not lengths or not all(_positive_int(t) for t in lengths) \
                or lengths != sorted(set(lengths)):
            raise bad("'prefill_lengths' must be a non-empty ascending list of positive integers")
        if not _positive_int(data["max_len"]) or lengths[-1] > data["max_len"]:
            raise bad("'max_len' must be a positive integer at least the longest prefill length")
        if data["quantization"] not in QUANTIZATIONS:
            raise bad(f"'quantization' must be one of {QUANTIZATIONS}")
        shapes = data["state_shapes"]
        if not isinstance(shapes, dict) or list(shapes) != state_names(int(model["n_layer"])) or not all(
                isinstance(s, list) and s and all(_positive_int(d) for d in s) for s in shapes.values()):
            raise bad("'state_shapes' must give a shape for each of prev_embedding, k_cache_i, v_cache_i in order")
        if not isinstance(data["source"], dict):
            raise bad("'source' must be a JSON object")
        return cls(model=model, max_len=data["max_len"], prefill_lengths=tuple(lengths),
                   quantization=data["quantization"], state_shapes={k: tuple(v) for k, v in shapes.items()},
                   source=data["source"])


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclasses.dataclass(frozen=True)
class Package:
    """A verified exported model: every file matched its manifest entry."""

    path: Path
    config: PackageConfig
    tokenizer: Tokenizer

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def write_package(out: str | Path, model_bytes: bytes, tokenizer: Tokenizer, config: PackageConfig) -> Path:
    """Atomically write a package directory at `out` (an existing package there is replaced)."""
    out = Path(out)
    if tokenizer.vocab_size != config.vocab_size:
        raise PackageError(f"tokenizer vocab ({tokenizer.vocab_size}) != model vocab ({config.vocab_size})")
    if out.exists() and not (out / MANIFEST_FILE).is_file():
        raise PackageError(f"{out} exists and is not an exported model: refusing to replace it; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / MODEL_FILE).write_bytes(model_bytes)
        tokenizer.save(tmp / TOKENIZER_DIR)
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        files = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size} for p in _files(tmp)}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "files": files}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out




def resolve_package(path: str | Path) -> Path:
    """The package directory for a path to it or to its model.tflite."""
    path = Path(path).expanduser()
    return path.parent if path.name == MODEL_FILE and path.is_file() else path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PackageError(f"{path} is missing; {REEXPORT}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PackageError(f"{path} is not readable JSON ({e}); {REEXPORT}") from None


def _verify_manifest(root: Path) -> None:
    manifest = _read_json(root / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{root} is not a flaxchat LiteRT export ({MANIFEST_FILE} has no format {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PackageError(f"{root} has format version {manifest.get('format_version')!r}; this flaxchat reads "
                           f"{FORMAT_VERSION}: {REEXPORT}")
    files = manifest.get("files")
    required = {MODEL_FILE, CONFIG_FILE}
    if not isinstance(files, dict) or not required <= set(files):
        raise PackageError(f"{root / MANIFEST_FILE} does not list {sorted(required)}; {REEXPORT}")
    for name, entry in sorted(files.items()):
        path = root / name
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not _positive_int(entry.get("size")):
            raise PackageError(f"{root / MANIFEST_FILE}: bad entry for {name}; {REEXPORT}")
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise PackageError(f"{root / MANIFEST_FILE} names a file outside the package: {name!r}")
        if not path.is_file():
            raise PackageError(f"{path} is missing: the export is incomplete; {REEXPORT}")
        size = path.stat().st_size
        if size != entry["size"]:
            raise PackageError(f"{path} is {size:,} bytes, the manifest says {entry['size']:,}: the file is truncated "
                               f"or was replaced; {REEXPORT}")
        if sha256_file(path) != entry["sha256"]:
            raise PackageError(f"{path} does not match its sha256 in the manifest: the file is corrupt or was "
                               f"replaced; {REEXPORT}")


def read_package(path: str | Path) -> Package:
    """Load and verify a package (files against the manifest, config, tokenizer against the config)."""
    root = resolve_package(path)
    if not root.is_dir():
        raise PackageError(f"no exported model at {root}: export one with `uv run apps/export --model NAME`")
    _verify_manifest(root)
    config = PackageConfig.from_dict(_read_json(root / CONFIG_FILE), root / CONFIG_FILE)
    try:
        tokenizer = Tokenizer.load(root / TOKENIZER_DIR)
    except TokenizerFileError as e:
        raise PackageError(f"{root}: the tokenizer cannot be loaded ({e})") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise PackageError(f"{root}: the tokenizer has {tokenizer.vocab_size} tokens but the model was exported for "
                           f"{config.vocab_size}: the tokenizer does not belong to this model; {REEXPORT}")
    return Package(root, config, tokenizer)
