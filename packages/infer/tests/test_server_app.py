"""apps/chat_web: with no checkpoint it serves the embedded tiny random model and says so everywhere."""

import runpy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from flaxchat.infer.server import ServerConfig, create_app

APP = Path(__file__).resolve().parents[3] / "apps" / "chat_web" / "__main__.py"


@pytest.fixture(scope="module")
def chat_web():
    return runpy.run_path(str(APP))  # the app's functions, without running main


def test_without_a_checkpoint_it_serves_the_embedded_model_and_says_so(chat_web, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path))  # nothing trained here
    model, tokenizer, name, note = chat_web["load"](chat_web["parse_args"]([]))
    assert name == chat_web["EMBEDDED_NAME"] and "RANDOM weights" in note and "byte-level tokenizer" in note
    assert model.config.vocab_size == tokenizer.vocab_size == 265
    client = TestClient(create_app(model, tokenizer, name, ServerConfig(note=note)))  # not started: no compilation
    assert client.get("/v1/models").json()["data"][0]["note"] == note
    assert note in client.get("/").text  # the UI's banner


def test_a_missing_named_checkpoint_is_an_error_not_a_fallback(chat_web, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path))
    assert chat_web["main"](["--model", "nope"]) == 1
    assert "no model checkpoint" in capsys.readouterr().err


def test_flags_are_checked(chat_web):
    with pytest.raises(SystemExit):
        chat_web["parse_args"](["--temperature", "3"])
    with pytest.raises(SystemExit):
        chat_web["parse_args"](["--model", "x", "--embedded"])
