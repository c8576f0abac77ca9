"""Fixtures: a byte-level tokenizer, tiny GPTs, and scripted GPTs whose logits are known by construction.

Models are built abstractly and filled from numpy (eager jax init ops would compile once per
parameter shape), and fixtures are session-scoped so compiled scoring forwards are shared.
"""

import functools
import http.server
import json
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flaxchat.model import GPT, GPTConfig
from flaxchat.model.params import assign_params, named_params
from flaxchat.tokenizer import Tokenizer
from flaxchat.tokenizer.spec import nanochat_spec

VOCAB = 265  # 256 bytes + 9 special tokens
SCRIPT_LEN = 256


def byte_tokenizer() -> Tokenizer:
    """Token id = byte value; the specials are 256..264. Needs no training."""
    return Tokenizer(nanochat_spec({bytes([i]): i for i in range(256)}))


def tiny_config(**overrides) -> GPTConfig:
    base = dict(sequence_len=128, vocab_size=VOCAB, n_layer=2, n_head=2, n_kv_head=1, n_embd=32, window_pattern="SL")
    return GPTConfig(**{**base, **overrides})


def random_gpt(config: GPTConfig, seed: int = 0, cls=GPT, scale: float = 0.3) -> GPT:
    """Every parameter random, including the zero-initialized projections, so outputs depend on the input."""
    model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    arrays = {name: scale * rng.standard_normal(value.shape) for name, value in named_params(model).items()}
    arrays["resid_lambdas"] += 1.0
    assign_params(model, arrays)
    return model


class BigramGPT(GPT):
    """Logits at a position are table[token at that position]: the next token depends on the current one only."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        self.table = nnx.Variable(jnp.zeros((config.vocab_size, config.vocab_size), jnp.float32))

    def hidden(self, idx):
        return jax.nn.one_hot(idx, self.config.vocab_size, dtype=jnp.float32)

    def head(self, h, kernel_vc=None):
        return h @ self.table[...]


class PositionScriptedGPT(GPT):
    """For the Engine: after n tokens in a row the next-token logits are script[n]. The real cached
    forward runs underneath, so prefill, cache and batching are exercised."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        self.script = nnx.Variable(jnp.zeros((SCRIPT_LEN, config.vocab_size), jnp.float32))

    def decode(self, idx, cache, lengths=None, *, last_only: bool = False, head_vc=None):
        if not last_only:
            raise NotImplementedError("the scripted model serves only last-token logits (the Engine's use)")
        _, cache = super().decode(idx, cache, lengths, last_only=True)
        return self.script[...][jnp.minimum(cache.pos, SCRIPT_LEN - 1)], cache


# A tiny CORE bundle ---------------------------------------------------------------------------
CONFIG = """\
icl_tasks:
- label: mc_demo
  dataset_uri: reasoning/mc_demo.jsonl
  num_fewshot: [1]
  icl_task_type: multiple_choice
  continuation_delimiter: "\\nAnswer: "
- label: schema_demo
  dataset_uri: language_understanding/schema_demo.jsonl
  num_fewshot: [0]
  icl_task_type: schema
- label: lm_demo
  dataset_uri: language_understanding/lm_demo.jsonl
  num_fewshot: [2, 5]
  icl_task_type: language_modeling
"""
META = """\
Eval Task,Task Category,Task Type,#shots,#datapoints,Random baseline,Centered Metric?,Description
mc_demo,reasoning,multiple choice,1,4,25,,demo
schema_demo,language understanding,schema,0,3,50,,demo
lm_demo,language understanding,language modeling,2,4,0,,demo
"""
# The bigram model below favours "x" after every token, and " " after "z".
MC = [  # mean loss is lowest for the choice with the largest share of "x"; ties go to the first
    {"query": "Q1?", "choices": ["xxx", "abc"], "gold": 0},  # right
    {"query": "Q2?", "choices": ["abc", "xxa"], "gold": 0},  # wrong: "xxa" wins
    {"query": "Q3?", "choices": ["bx", "xx", "ab"], "gold": 1},  # right
    {"query": "Q4?", "choices": ["pq", "rs"], "gold": 1},  # wrong: a tie picks choice 0
]
SCHEMA = [  # only the first token of the common suffix differs in loss: after "z" a space is likely
    {"context_options": ["Tom ate the pizza", "Tom ate the zz"], "continuation": "quickly.", "gold": 1},  # right
    {"context_options": ["she sang z", "she sang a"], "continuation": "song", "gold": 0},  # right
    {"context_options": ["one z", "two z"], "continuation": "end", "gold": 1},  # wrong: " z end" is common, a tie
]
LM = [  # greedy: " " after "z", else "x"; the stripped prompt makes the delimiter part of the continuation
    {"context": "buzz", "continuation": "xxx"},  # right
    {"context": "fizz ", "continuation": "xx"},  # right: the context is trimmed
    {"context": "buzz", "continuation": "xy"},  # wrong
    {"context": "hello", "continuation": "xx"},  # wrong: " " after "o" is not predicted
]


def write_bundle(root, replace=None):
    """A 3-task bundle in the DCLM layout; `replace` = (old, new) edits core.yaml."""
    tasks = {"reasoning/mc_demo.jsonl": MC, "language_understanding/schema_demo.jsonl": SCHEMA,
             "language_understanding/lm_demo.jsonl": LM}
    (root / "eval_data").mkdir(parents=True)
    (root / "core.yaml").write_text(CONFIG.replace(*replace) if replace else CONFIG)
    (root / "eval_meta_data.csv").write_text(META)
    for uri, rows in tasks.items():
        path = root / "eval_data" / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="session")
def make_bundle():
    """make_bundle(root, replace=None) -> root holding the tiny CORE bundle (see test_core for the expected scores)."""
    return write_bundle


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="session")
def jsonl_rows():
    return read_jsonl


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return byte_tokenizer()


@pytest.fixture(scope="session")
def bigram():
    """bigram(table (V, V) array) -> a BigramGPT with that table."""

    def make(table: np.ndarray) -> BigramGPT:
        model = random_gpt(tiny_config(), cls=BigramGPT)
        model.table.set_value(jnp.asarray(table, jnp.float32))
        return model

    return make


@pytest.fixture(scope="session")
def scripted():
    """scripted({n: token id, ...}) -> a PositionScriptedGPT emitting script[n] after n tokens (token 0 elsewhere)."""

    def make(script: dict[int, int]) -> PositionScriptedGPT:
        table = np.full((SCRIPT_LEN, VOCAB), -30.0, np.float32)
        table[:, 0] = 0.0
        for n, token in script.items():
            table[n] = -30.0
            table[n, token] = 0.0
        model = random_gpt(tiny_config(), cls=PositionScriptedGPT)
        model.script.set_value(jnp.asarray(table))
        return model

    return make


@pytest.fixture(scope="session")
def tiny_gpt() -> GPT:
    return random_gpt(tiny_config(), seed=1)


@pytest.fixture
def http_server():
    """http_server(directory) -> base URL of a local HTTP server for it (stopped after the test)."""
    servers = []

    def start(directory) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
