"""Run inside a venv holding only the flaxchat-tokenizer wheel: prints what the tokenizer does, as JSON.

    python tokenizer_check.py use TOKENIZER_DIR CASES.json   # encode/decode/render with a saved tokenizer
    python tokenizer_check.py train CASES.json               # train one (the `train` extra) and encode with it
"""

import json
import sys

from flaxchat.tokenizer import Tokenizer


def describe(tok: Tokenizer, cases: dict) -> dict:
    ids = [tok.encode(text) for text in cases["texts"]]
    ids_mask = tok.render_conversation(cases["conversation"])
    return {
        "vocab_size": tok.vocab_size,
        "ids": ids,
        "decoded": [tok.decode(i) for i in ids],
        "conversation": [list(x) for x in ids_mask],
        "prompt": tok.render_for_completion(cases["conversation"]),
        "modules": sorted(sys.modules),
    }


def main(argv: list[str]) -> None:
    if argv[0] == "use":
        tok, cases = Tokenizer.load(argv[1]), json.loads(open(argv[2]).read())
    else:
        cases = json.loads(open(argv[1]).read())
        tok = Tokenizer.train(cases["corpus"], vocab_size=cases["vocab_size"])
    print(json.dumps(describe(tok, cases)))


if __name__ == "__main__":
    main(sys.argv[1:])
