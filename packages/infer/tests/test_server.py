"""The chat server end to end: a real uvicorn server on a free port, driven by the `openai` client,
raw HTTP, a WebSocket client, schemathesis and a headless Chromium.

The model has the random weights of conftest's `model`; each forward waits until the test says
the model is loaded (so /health can be seen warming up) and then takes PACE seconds, so replies
stream at a human pace and a test can act while one is being generated. Greedy replies are
compared with the Engine's.
"""

import concurrent.futures
import json
import shutil
import threading
import time
from typing import NamedTuple

import httpx
import jax
import numpy as np
import openai
import pytest
from flaxchat.infer.batcher import Scheduler, SchedulerConfig
from flaxchat.infer.engine import Engine
from flaxchat.infer.server import ServerConfig, create_app, serve_in_background
from flaxchat.model import GPT

MODEL = "tiny-test"
PACE = {"seconds": 0.01}  # per forward pass
LOADED = threading.Event()


def _forward_pace():
    if not LOADED.wait(120):
        raise TimeoutError("the test never released the model")
    time.sleep(PACE["seconds"])


class PacedGPT(GPT):
    def decode(self, idx, cache, lengths=None, *, last_only: bool = False, head_vc=None):
        jax.debug.callback(_forward_pace)
        return super().decode(idx, cache, lengths, last_only=last_only, head_vc=head_vc)


class Server(NamedTuple):
    url: str
    scheduler: Scheduler
    early_health: httpx.Response  # /health before the model was released


@pytest.fixture(scope="module")
def paced_model(make_model) -> PacedGPT:
    return make_model(0, cls=PacedGPT)


@pytest.fixture(scope="module")
def server(paced_model, tokenizer):
    # One prefill bucket (256) and 8 rows: two compilations for the whole module.
    config = ServerConfig(max_tokens=64, scheduler=SchedulerConfig(slots=8, cache_len=256, min_prefill_len=256))
    app = create_app(paced_model, tokenizer, MODEL, config)
    LOADED.clear()
    with serve_in_background(app) as url:
        early = httpx.get(f"{url}/health")
        LOADED.set()
        deadline = time.monotonic() + 600
        while httpx.get(f"{url}/health").status_code != 200:
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.1)
        yield Server(url, app.state.flaxchat.scheduler, early)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def engine(paced_model, tokenizer) -> Engine:
    return Engine(paced_model, tokenizer)


def chat_prompt(tokenizer, text: str) -> list[int]:
    return tokenizer.render_for_completion({"messages": [{"role": "user", "content": text},
                                                         {"role": "assistant", "content": ""}]})


def engine_reply(engine, prompt, max_tokens, **settings) -> list[int]:
    pace, PACE["seconds"] = PACE["seconds"], 0.0  # the reference need not stream at a human pace
    try:
        sequences, _ = engine.generate_batch(prompt, max_tokens=max_tokens, **settings)
    finally:
        PACE["seconds"] = pace
    return sequences[0][len(prompt):]


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def idle(server) -> bool:
    stats = server.scheduler.stats()
    return stats.active == 0 and stats.queued == 0


def test_health_is_503_until_warmed_up(server):
    assert server.early_health.status_code == 503
    assert server.early_health.json()["ready"] is False
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "ready": True, "model": MODEL}


def test_chat_greedy_equals_the_engine(server, client, engine, tokenizer):
    prompt = chat_prompt(tokenizer, "hello")
    expected = engine_reply(engine, prompt, 40, temperature=0.0)
    assert len(expected) == 40  # the reply runs to max_tokens: no early stop to hide a difference
    messages = [{"role": "user", "content": "hello"}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40, temperature=0)
    assert reply.choices[0].message.content == tokenizer.decode(expected)
    assert reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(prompt), 40)

    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == tokenizer.decode(expected)
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 40

    # A seeded sampled reply is the Engine's too (same draws, step by step).
    sampled = engine_reply(engine, prompt, 30, temperature=0.9, top_k=50, seed=5)
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0.9,
                                           extra_body={"top_k": 50}, seed=5)
    assert reply.choices[0].message.content == tokenizer.decode(sampled)


def test_chat_stop_strings_and_logprobs(server, client, engine, tokenizer):
    prompt = chat_prompt(tokenizer, "hello")
    text = tokenizer.decode(engine_reply(engine, prompt, 40, temperature=0.0))
    stop = text[10:13]
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=40, temperature=0, stop=[stop], logprobs=True, top_logprobs=3)
    choice = reply.choices[0]
    assert choice.message.content == text[: text.index(stop)] and choice.finish_reason == "stop"
    for item in choice.logprobs.content:  # greedy: each token is its own top alternative
        assert len(item.top_logprobs) == 3 and item.top_logprobs[0].logprob == item.logprob <= 0


def test_completions_echo_logprobs_as_lm_eval_asks(server, client, engine, tokenizer):
    ids = tokenizer.encode("The quick brown fox", prepend=tokenizer.bos_id)
    greedy = engine_reply(engine, ids, 1, temperature=0.0)[0]
    # lm-evaluation-harness local-completions, loglikelihood: echo the prompt, one more token, logprobs 1.
    out = client.completions.create(model=MODEL, prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids) + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[-1] == max(lp.top_logprobs[-1].values())  # lm-eval's is_greedy for the new token
    assert out.choices[0].text == tokenizer.decode(ids + [greedy])
    # max_tokens 0 scores the prompt alone: the full forward agrees with the decode step that drew the token.
    scored = client.completions.create(model=MODEL, prompt=ids + [greedy], max_tokens=0, echo=True, logprobs=1)
    np.testing.assert_allclose(scored.choices[0].logprobs.token_logprobs[1:], lp.token_logprobs[1:], atol=1e-4)
    assert scored.usage.completion_tokens == 0 and scored.choices[0].text == out.choices[0].text
    # Text prompts are encoded after <|bos|>, which is not echoed; a list of prompts gives one choice each.
    batch = client.completions.create(model=MODEL, prompt=["The quick", "brown fox"], max_tokens=0, echo=True,
                                      logprobs=2)
    assert [c.index for c in batch.choices] == [0, 1] and [c.text for c in batch.choices] == ["The quick", "brown fox"]
    first = batch.choices[0].logprobs
    assert "".join(first.tokens) == "The quick" and first.text_offset[0] == 0 and None not in first.token_logprobs
    assert all(len(top) <= 2 for top in first.top_logprobs)


LIMIT_CASES = [  # (path, body, status, words in the message)
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}] * 501}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 8001}]}, 400, "8000"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 7000},
                                           {"role": "assistant", "content": "y" * 7000}] * 2
                              + [{"role": "user", "content": "x" * 5000}]}, 400, "32000"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]}, 400, "empty"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "hi"}]}, 400, "role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}, 400, "temperature"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_k": 201}, 400, "top_k"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4097}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     400, "last message"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, 400,
     "alternate"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 300}]}, 400, "context"),
    ("/v1/chat/completions", {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, MODEL),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400, "echo"),
    ("/v1/completions", {"prompt": [1, 2, 100000]}, 400, "vocabulary"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 300}, 400, "context"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 6}, 400, "logprobs"),
    ("/v1/completions", {"prompt": ["a", "b"], "stream": True}, 400, "stream"),
]


@pytest.mark.parametrize("path, body, status, words", LIMIT_CASES, ids=[str(i) for i in range(len(LIMIT_CASES))])
def test_bad_requests_get_openai_shaped_4xx(server, path, body, status, words):
    response = httpx.post(f"{server.url}{path}", json=body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and words in error["message"]


def test_malformed_json_and_unknown_routes(server):
    response = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json", timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and "error" in response.json()
    assert httpx.get(f"{server.url}/v1/nothing").json()["error"]["type"] == "not_found_error"


def metric_values(server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics").text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_count_requests_tokens_and_first_tokens(server, client):
    before = metric_values(server)
    messages = [{"role": "user", "content": "hi"}]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=7, temperature=0)
    streamed = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, temperature=0,
                                                   stream=True))
    httpx.post(f"{server.url}/v1/chat/completions", json={"messages": []})
    after = metric_values(server)

    def grew(name):
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew('flaxchat_requests_total{endpoint="chat",finish_reason="length"}') == 2
    generated = plain.usage.completion_tokens + streamed[-1].usage.completion_tokens
    assert grew("flaxchat_generated_tokens_total") == generated == 12
    assert grew("flaxchat_prompt_tokens_total") == 2 * plain.usage.prompt_tokens
    assert grew("flaxchat_time_to_first_token_seconds_count") == 2
    assert grew('flaxchat_rejected_requests_total{status="400"}') == 1
    assert after["flaxchat_slots"] == 8
    assert after["flaxchat_cache_capacity"] == 64  # short rows: the smallest capacity (prefilled at 256, then cut)
    assert after["flaxchat_active_slots"] == after["flaxchat_queued_requests"] == 0


def test_eight_concurrent_streams_share_the_batch(server, client, engine, tokenizer):
    expected = tokenizer.decode(engine_reply(engine, chat_prompt(tokenizer, "hello"), 100, temperature=0.0))
    assert server.scheduler.stats().peak_active < 8
    start = threading.Barrier(8)

    def chat(_):
        start.wait()
        stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}],
                                                max_tokens=100, temperature=0, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(chat, range(8)))
    assert replies == [expected] * 8
    assert server.scheduler.stats().peak_active == 8  # all eight rows decoded together


def test_a_client_that_disconnects_frees_its_row(server):
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 200, "temperature": 0}
    before = server.scheduler.stats()
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        for line in r.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # the reply is streaming: hang up
    wait_for(lambda: idle(server))
    with pytest.raises(httpx.ReadTimeout):  # a plain request whose client gives up
        httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
    wait_for(lambda: idle(server))
    after = server.scheduler.stats()
    assert after.finished.get("cancelled", 0) - before.finished.get("cancelled", 0) == 2
    assert after.generated_tokens - before.generated_tokens < 200  # neither ran to its 200 tokens


def test_websocket_streams_stops_and_refuses(server, engine, tokenizer):
    from websockets.sync.client import connect

    expected = tokenizer.decode(engine_reply(engine, chat_prompt(tokenizer, "hello"), 30, temperature=0.0))
    with connect(server.url.replace("http", "ws") + "/ws", open_timeout=30) as ws:
        def generate(**settings):
            ws.send(json.dumps({"type": "generate", "messages": [{"role": "user", "content": "hello"}], **settings}))

        def receive() -> dict:
            return json.loads(ws.recv(timeout=60))

        generate(temperature=0, max_tokens=30)
        text, message = "", receive()
        while message["type"] == "token":
            text, message = text + message["text"], receive()
        assert message["type"] == "done" and message["finish_reason"] == "length" and text == expected

        generate(temperature=5)
        error = receive()
        assert error["type"] == "error" and "temperature" in error["message"]

        generate(temperature=0, max_tokens=200)
        assert receive()["type"] == "token"
        ws.send(json.dumps({"type": "stop"}))
        message = receive()
        while message["type"] == "token":
            message = receive()
        assert message == {"type": "done", "finish_reason": "cancelled"}
        wait_for(lambda: idle(server))


def test_fuzzing_the_openapi_schema_finds_no_server_error(server):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    schema = schemathesis.openapi.from_dict(httpx.get(f"{server.url}/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/completions", "GET /health"}
    strategy = st.one_of(*(op.as_strategy(mode) for op in operations
                           for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)))
    statuses = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def no_server_error(case):
        response = case.call(base_url=server.url, timeout=60)
        statuses.append(response.status_code)
        assert response.status_code < 500, f"{case.method} {case.path} {case.body!r:.300} -> {response.text[:300]}"

    PACE["seconds"] = 0.0  # no need to watch these replies stream
    try:
        no_server_error()
    finally:
        PACE["seconds"] = 0.01
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)
    wait_for(lambda: idle(server))


def test_browser_chat_streams_and_stops(server, engine, tokenizer):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is not installed: run `apt-get install -y --no-install-recommends chromium` "
                    "(.ci/run does this on Debian)")
    full = tokenizer.decode(engine_reply(engine, chat_prompt(tokenizer, "hello"), 240, temperature=0.0))
    cancelled = server.scheduler.stats().finished.get("cancelled", 0)
    reply_text = "document.querySelector('.message.assistant')?.firstChild?.textContent ?? ''"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server.url)
            page.wait_for_selector("#health.ok")
            page.fill("#temperature", "0")
            page.fill("#max-tokens", "240")
            page.fill("#input", "hello")
            page.press("#input", "Enter")
            assert page.inner_text(".message.user") == "hello"
            page.wait_for_function(f"({reply_text}).length > 5")  # tokens are streaming in
            page.click("#stop")
            page.wait_for_function("document.getElementById('status').textContent === 'stopped'")
            stopped = page.evaluate(reply_text)
            time.sleep(0.5)
            assert page.evaluate(reply_text) == stopped  # it stopped growing
            assert "stopped" in page.inner_text(".message.assistant .note")
            assert 5 < len(stopped) < len(full) and full.startswith(stopped)
            assert page.is_visible("#send") and not page.is_visible("#stop")
        finally:
            browser.close()
    wait_for(lambda: idle(server))
    assert server.scheduler.stats().finished["cancelled"] == cancelled + 1
