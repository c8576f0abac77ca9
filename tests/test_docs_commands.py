"""The commands in the docs use only flags the apps really have."""

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("packages/*/README.md"))]
UV_OPTIONS = {"--all-packages", "--extra", "--package"}


@cache
def app_flags(app: str, subcommand: str | None) -> frozenset[str]:
    argv = [sys.executable, str(ROOT / "apps" / app), *([subcommand] if subcommand else []), "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{app} --help failed:\n{result.stderr[-2000:]}"
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout))


def doc_commands():
    """(doc, app, subcommand, flags) for each `uv run ... apps/NAME ...` line of a fenced code block."""
    for doc in DOCS:
        if not doc.exists():
            continue
        text = doc.read_text()
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S):
            for command in re.sub(r"\\\n\s*", " ", block).splitlines():
                command = command.split(" #")[0].strip()
                match = re.search(r"\buv run\b(.*?)\bapps/(\w+)(.*)", command)
                if not match:
                    continue
                words = shlex.split(match.group(3).split("'")[0])
                subcommand = words[0] if words and not words[0].startswith("-") and match.group(2) == "bench" else None
                flags = [w.split("=")[0] for w in words if w.startswith("--")]
                yield pytest.param(doc.relative_to(ROOT), match.group(2), subcommand, flags,
                                   id=f"{doc.name}:{match.group(2)}{':' + subcommand if subcommand else ''}")


COMMANDS = list(doc_commands())


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("doc, app, subcommand, flags", COMMANDS)
def test_doc_command_flags_exist(doc, app, subcommand, flags):
    assert (ROOT / "apps" / app / "__main__.py").exists(), f"{doc} runs apps/{app}, which does not exist"
    unknown = sorted(set(flags) - app_flags(app, subcommand) - UV_OPTIONS)
    assert not unknown, f"{doc}: apps/{app} has no flag(s) {unknown}"
