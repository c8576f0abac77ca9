"""An exported model on LiteRT's CompiledModel: feed tokens, get next-token logits. No jax.

The KV cache lives in two sets of LiteRT tensor buffers used in turn (ping-pong): each call
reads the state from one set and writes the updated state into the other, so the cache never
passes through numpy. A prompt is fed in chunks of the exported prefill lengths, largest first;
the remainder (shorter than the smallest length) goes through `decode` one token at a time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from ai_edge_litert.compiled_model import CompiledModel
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from ai_edge_litert.options import CpuOptions, Options

from flaxchat.export.errors import GenerationError, PackageError
from flaxchat.export.package import (
    DECODE,
    INPUT_POS,
    LOGITS,
    REEXPORT,
    TOKENS,
    PackageConfig,
    prefill_signature,
    read_package,
    state_names,
)
from flaxchat.tokenizer import Tokenizer

T = TypeVar("T")


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2 (LiteRT logs accelerator probing when it loads a model
    and creates its environment); yields a list holding the captured text afterwards."""
    captured: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def _quietly(fn: Callable[[], T], failure: str) -> T:
    """fn() with native logs hidden; if it fails, a PackageError carrying the error and the log's tail."""
    with _native_stderr() as log:
        try:
            return fn()
        except (ValueError, RuntimeError) as e:
            error = e
    raise PackageError(f"{failure} ({error}; {log[0].strip()[-300:]}); {REEXPORT}")


def _verify_flatbuffer(path: Path) -> None:
    """LiteRT's flatbuffer verifier (the Interpreter runs it; CompiledModel crashes on a damaged file)."""
    def check() -> None:  # the interpreter is dropped inside, so its teardown logs are captured too
        Interpreter(model_path=str(path),
                    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)

    _quietly(check, f"{path} is not a valid LiteRT model")


def _details(tensors: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {name: (d["dtype"], tuple(d["shape"])) for name, d in tensors.items()}


class LiteRTModel:
    """A loaded, verified export; `forward` feeds tokens after those already in the cache."""

    def __init__(self, model_path: Path, config: PackageConfig, tokenizer: Tokenizer | None = None,
                 num_threads: int | None = None):
        """A .tflite and the config it was exported with (LiteRTModel.load reads both from a package)."""
        self.model_path = Path(model_path)
        self.config = config
        self.tokenizer = tokenizer
        _verify_flatbuffer(self.model_path)
        threads = num_threads or os.cpu_count() or 1
        options = Options(cpu_options=CpuOptions(num_threads=threads))
        self._model = _quietly(lambda: CompiledModel.from_file(str(self.model_path), options=options),
                               f"LiteRT cannot load {self.model_path}")
        self._check_signatures()
        # The first buffer write creates LiteRT's environment (more native logs).
        self._states = _quietly(lambda: [self._state_buffers(), self._state_buffers()],
                                f"LiteRT cannot create the KV cache buffers of {self.model_path}")
        self._io = {sig: {name: self._model.create_input_buffer_by_name(sig, name) for name in (TOKENS, INPUT_POS)}
                    | {LOGITS: self._model.create_output_buffer_by_name(sig, LOGITS)} for sig in self.config.signatures}
        self._current = 0  # which state set holds the cache
        self.position = 0  # tokens in the cache

    @classmethod
    def load(cls, path: str | Path, num_threads: int | None = None) -> "LiteRTModel":
        """Load and verify an exported model directory (or its model.tflite); PackageError if unusable."""
        package = read_package(path)
        return cls(package.model_path, package.config, package.tokenizer, num_threads)

    def close(self) -> None:
        """Release LiteRT's buffers and model now (quietly: LiteRT logs its teardown)."""
        with _native_stderr():
            self._states, self._io = [], {}
            self._model.close()

    def __enter__(self) -> "LiteRTModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def max_len(self) -> int:
        return self.config.max_len

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def _check_signatures(self) -> None:
        """The flatbuffer's signatures must be exactly what config.json describes."""
        found = self._model.get_signature_list()
        expected = self.config.signatures
        if set(found) != set(expected):
            self._mismatch(f"signatures {sorted(found)}, config.json expects {sorted(expected)}")
        names = state_names(self.config.n_layer)
        for sig, length in expected.items():
            inputs = _details(self._model.get_input_tensor_details(sig))
            outputs = _details(self._model.get_output_tensor_details(sig))
            want_in = {TOKENS: ("int32", (1, length)), INPUT_POS: ("int32", (length,))}
            want_out = {LOGITS: ("float32", (1, self.vocab_size))}
            for name in names:
                want_in[name] = want_out[name] = ("float32", self.config.state_shapes[name])
            for kind, got, want in (("inputs", inputs, want_in), ("outputs", outputs, want_out)):
                if got != want:
                    diff = sorted(set(got.items()) ^ set(want.items()))
                    self._mismatch(f"signature {sig!r} {kind} differ from config.json: {diff[:4]}")

    def _mismatch(self, problem: str):
        raise PackageError(f"{self.model_path} does not match its config.json ({problem}): the model file "
                           f"belongs to another export; {REEXPORT}")

    def _state_buffers(self) -> dict:
        """One set of state buffers, zeroed (the attention mask hides stale entries, but NaN garbage would leak)."""
        buffers = {}
        for name in state_names(self.config.n_layer):
            buffers[name] = self._model.create_input_buffer_by_name(DECODE, name)
            buffers[name].write(np.zeros(self.config.state_shapes[name], np.float32))
        return buffers

    def reset(self) -> None:
        """Start a new sequence (cache entries past the position are never visible, so nothing is cleared)."""
        self.position = 0

    def _plan(self, n: int) -> list[tuple[str, int]]:
        """(signature, tokens) calls covering n tokens: largest prefill lengths first, then single decodes."""
        calls = []
        for length in reversed(self.config.prefill_lengths):
            while n >= length:
                calls.append((prefill_signature(length, self.config.prefill_lengths), length))
                n -= length
        return calls + [(DECODE, 1)] * n

    def forward(self, tokens: Sequence[int]) -> np.ndarray:
        """Feed tokens after the cached ones; fp32 logits (vocab,) for the token after the last."""
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        if tokens.size == 0:
            raise GenerationError("forward needs at least one token")
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise GenerationError(f"token ids must be in [0, {self.vocab_size})")
        if self.position + tokens.size > self.max_len:
            raise GenerationError(f"{self.position} cached + {tokens.size} new tokens exceed the exported KV cache "
                                  f"of {self.max_len} positions: start a new sequence or re-export with a larger "
                                  "--max-len")
        logits, offset = None, 0
        for sig, length in self._plan(tokens.size):
            logits = self._call(sig, tokens[offset:offset + length])
            offset += length
        return logits

    def _call(self, sig: str, chunk: np.ndarray) -> np.ndarray:
        io = self._io[sig]
        io[TOKENS].write(chunk.astype(np.int32).reshape(1, -1))
        io[INPUT_POS].write(np.arange(self.position, self.position + chunk.size, dtype=np.int32))
        read, write = self._states[self._current], self._states[1 - self._current]
        self._model.run_by_name(sig, {TOKENS: io[TOKENS], INPUT_POS: io[INPUT_POS], **read},
                                {LOGITS: io[LOGITS], **write})
        self._current = 1 - self._current
        self.position += chunk.size
        return io[LOGITS].read(self.vocab_size, np.float32).reshape(-1)
