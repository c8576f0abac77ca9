"""Run inside a venv holding flaxchat-infer (and its flaxchat deps): serve a checkpoint, chat with it over HTTP.

    python serve_check.py CHECKPOINT_DIR

Prints JSON: the streamed reply's deltas, finish reason and usage, the same request's non-streamed reply,
and every module loaded by then.
"""

import json
import sys
import urllib.request

from flaxchat.infer.batcher import SchedulerConfig
from flaxchat.infer.server import ServerConfig, create_app, serve_in_background
from flaxchat.model.checkpoint import load_checkpoint

REQUEST = {"model": "tiny", "messages": [{"role": "user", "content": "Hello there"}],
           "max_tokens": 12, "temperature": 0.0}


def post(url: str, body: dict):
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=120)


def streamed(url: str) -> dict:
    deltas, finish, usage = [], None, None
    with post(url, REQUEST | {"stream": True}) as response:
        content_type = response.headers["Content-Type"]
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:  # the last chunk carries only the usage
                deltas.append(choice["delta"].get("content") or "")
                finish = choice.get("finish_reason") or finish
    return {"content_type": content_type, "deltas": deltas, "finish_reason": finish, "usage": usage}


def main(checkpoint: str) -> None:
    model, tokenizer, _ = load_checkpoint(checkpoint)
    config = ServerConfig(tools=False, scheduler=SchedulerConfig(slots=2, cache_len=128))
    with serve_in_background(create_app(model, tokenizer, "tiny", config)) as url:
        stream = streamed(url)
        with post(url, REQUEST) as response:
            whole = json.load(response)["choices"][0]["message"]["content"]
    print(json.dumps(stream | {"whole": whole, "modules": sorted(sys.modules)}))


if __name__ == "__main__":
    main(sys.argv[1])
