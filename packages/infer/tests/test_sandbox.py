"""execute_code: nanochat's behaviours, the result fields, limits, modes and threads.

The hostile programs live in test_sandbox_hostile.py.
"""

import dataclasses
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flaxchat.infer.tools import (
    ExecutionResult,
    SandboxArgumentError,
    SandboxError,
    SandboxLimits,
    execute_code,
    sandbox,
    sandbox_capabilities,
)

IS_ROOT = os.geteuid() == 0
SYSTEM_PYTHON = "/usr/bin/python3"
CAPS = sandbox_capabilities()
needs_root = pytest.mark.skipif(not IS_ROOT, reason="the uid drop to nobody needs root")
needs_namespaces = pytest.mark.skipif(not CAPS.namespaces, reason="no namespaces here: " + "; ".join(CAPS.notes))


# --- nanochat's tests/test_execution.py -------------------------------------------


def test_happy_path():
    result = execute_code("print('hello world')")
    assert result == ExecutionResult(True, "hello world\n", "", exit_code=0)


def test_exception_is_captured_without_prelude_frames():
    result = execute_code("x = 1\n1/0")
    assert not result.success and result.exit_code == 1
    assert result.error == "ZeroDivisionError: division by zero"
    assert 'File "<llm>", line 2' in result.stderr
    assert "<string>" not in result.stderr  # the prelude's own frames are left out


def test_syntax_error_is_reported():
    result = execute_code("def f(:\n  pass")
    assert not result.success and result.error.startswith("SyntaxError")
    assert '"<llm>", line 1' in result.stderr


def test_exit_codes():
    assert execute_code("import sys; sys.exit(0)").success
    result = execute_code("import sys; print('bye'); sys.exit(3)")
    assert (result.success, result.exit_code, result.stdout, result.error) == (False, 3, "bye\n", "Execution failed")


def test_timeout_kills_infinite_loop():
    start = time.monotonic()
    result = execute_code("while True: pass", timeout=2.0)
    elapsed = time.monotonic() - start
    assert result == ExecutionResult(False, "", "", error="Execution timed out (process killed)", timeout=True)
    assert 2.0 <= elapsed < 4.0


def test_memory_limit():
    result = execute_code("x = bytearray(1024 * 1024 * 1024)")
    assert not result.success and result.memory_exceeded
    assert result.error == "MemoryError"


def test_threads_fit_in_the_memory_limit():
    code = "import threading\nts = [threading.Thread(target=sum, args=([1],)) for _ in range(20)]\n"
    code += "[t.start() for t in ts]\n[t.join() for t in ts]\nprint(len(ts))"
    assert execute_code(code).stdout == "20\n"


def test_no_memory_limit_when_none():
    code = "x = bytearray(400 * 1024 * 1024); print(len(x))"
    assert not execute_code(code).success
    assert execute_code(code, maximum_memory_bytes=None).stdout == f"{400 * 1024 * 1024}\n"


@pytest.mark.parametrize(
    "evil",
    [
        "import os; os.system('echo pwned')",
        "import shutil; shutil.rmtree('/tmp')",
        "import subprocess; subprocess.Popen(['ls'])",
        "import os; os.kill(1, 9)",
        "import os; os.fork()",
        "import resource",
        "exit()",
    ],
)
def test_destructive_functions_disabled(evil):
    result = execute_code(evil)
    assert not result.success
    assert result.error.startswith(("TypeError", "ImportError", "ModuleNotFoundError"))


def test_stdin_disabled():
    result = execute_code("import sys\nprint(repr(sys.stdin.read()))\ninput()")
    assert result.stdout == "''\n"
    assert result.error == "EOFError: EOF when reading a line"


def test_writes_go_to_a_fresh_tempdir():
    code = (
        "import os\n"
        "print(sorted(os.listdir('.')))\n"
        "open('landmine.txt', 'w').write('x')\n"
        "print(open('landmine.txt').read())\n"
    )
    for _ in range(2):  # the second run does not see the first run's file
        result = execute_code(code)
        assert result.success and result.stdout == "[]\nx\n"
    assert not os.path.exists("landmine.txt")


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("FAKE_SECRET_KEY", "hunter2")
    result = execute_code("import os; print('FAKE_SECRET_KEY' in os.environ, sorted(os.environ))")
    assert result.success
    assert result.stdout == "False ['LC_CTYPE', 'OMP_NUM_THREADS', 'PATH']\n"


def test_tricky_string_content():
    tricky = """s = 'it\\'s "quoted" \\\\ {braces} \\n'; print(len(s), s)"""
    result = execute_code(tricky)
    assert result.success and result.stdout == """26 it's "quoted" \\ {braces} \n\n"""


def test_fresh_globals():
    result = execute_code("import __main__\nprint(sorted(globals()), __main__.__dict__ is globals())")
    names = ["__builtins__", "__doc__", "__loader__", "__main__", "__name__", "__package__", "__spec__"]
    assert result.stdout == f"{names} True\n"


# --- output -------------------------------------------------------------------------


def test_unicode_and_separate_streams():
    result = execute_code("import sys\nprint('héllo ✓ 你好')\nprint('warn', file=sys.stderr)")
    assert result.success and result.stdout == "héllo ✓ 你好\n" and result.stderr == "warn\n"


def test_output_is_capped_and_the_run_killed():
    limits = SandboxLimits(max_output_bytes=1000)
    start = time.monotonic()
    result = execute_code("while True: print('x' * 100)", timeout=10, limits=limits)
    assert time.monotonic() - start < 5
    assert not result.success and result.output_truncated and not result.timeout
    assert result.stdout == ("x" * 100 + "\n") * 9 + "x" * 91
    assert result.error == "Output limit exceeded (1000 bytes per stream; process killed)"


def test_file_size_limit():
    limits = SandboxLimits(max_file_bytes=100_000)
    code = "with open('f', 'wb') as f:\n    f.write(bytes({n}))"
    ok = execute_code(code.format(n=100_000), limits=limits)
    too_big = execute_code(code.format(n=100_001), limits=limits)
    assert ok.success
    assert too_big.error == "OSError: [Errno 27] File too large"


def test_open_files_limit():
    code = "fs = [open('/dev/null') for _ in range({n})]"
    limits = SandboxLimits(max_open_files=32)
    assert execute_code(code.format(n=20), limits=limits).success
    assert "Too many open files" in execute_code(code.format(n=40), limits=limits).error


# --- arguments, capabilities, threads -----------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"code": b"print(1)"},
        {"timeout": 0},
        {"timeout": float("inf")},
        {"timeout": float("nan")},
        {"maximum_memory_bytes": 0},
        {"maximum_memory_bytes": 1.5},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(SandboxArgumentError):
        execute_code(**{"code": "pass", **kwargs})


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(SandboxLimits)])
def test_bad_limits_raise(field):
    with pytest.raises(SandboxArgumentError, match=field):
        SandboxLimits(**{field: 0})


def test_capabilities_describe_what_applies():
    caps = sandbox_capabilities()
    assert caps is sandbox_capabilities()  # probed once
    uid = execute_code("import os; print(os.getuid(), os.getgid(), os.getgroups())").stdout
    if IS_ROOT:
        assert uid == "65534 65534 []\n" and "nobody" in caps.runs_as
    else:
        assert uid.split()[0] == (str(0) if caps.user_namespace else str(os.getuid()))
    text = caps.describe()
    assert ("private mount/PID/network" in text) == caps.namespaces
    assert ("network is NOT blocked" in text) != caps.namespaces


def test_no_inherited_file_descriptors(tmp_path):
    with open(tmp_path / "open-in-parent", "w"):
        result = execute_code("import os\nprint(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))")
    assert result.stdout == "[0, 1, 2, 3]\n"  # stdio and the listing itself


def test_task_count_sees_this_process():
    # RLIMIT_NPROC for a non-root server without namespaces is offset by this count.
    assert sandbox._task_count(os.getuid()) >= threading.active_count() >= 1


@needs_namespaces
def test_namespaces_hide_the_host():
    code = (
        "import os, socket\n"
        "print(os.getpid(), os.getcwd.__class__.__name__)\n"
        "print(sorted(n for _, n in socket.if_nameindex()))\n"
        "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
        "print(os.listdir('/tmp'))\n"
    )
    result = execute_code(code)
    assert result.stdout == "1 NoneType\n['lo']\n['1']\n['sandbox']\n"


def test_concurrent_calls_from_threads():
    def run(i):
        return execute_code(f"import time; time.sleep(0.2); print({i} * {i})", timeout=20)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(16)))
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(16)]


# --- the fallback without namespaces ------------------------------------------------


@pytest.fixture
def plain_mode(monkeypatch):
    """Run without namespaces, as on a machine without a working `unshare`."""
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    try:
        detection = sandbox._detect()
    except SandboxError as error:
        # Without a mount namespace, nobody must be able to read the interpreter itself;
        # a pyenv Python under /root (mode 700) cannot be used, a system one can.
        if not os.path.exists(SYSTEM_PYTHON):
            pytest.skip(f"no plain sandbox with this interpreter and no {SYSTEM_PYTHON}: {error}")
        monkeypatch.setattr(sys, "executable", SYSTEM_PYTHON)
        try:
            detection = sandbox._detect()
        except SandboxError as error:
            pytest.skip(f"no plain sandbox on this machine: {error}")
    monkeypatch.setattr(sandbox, "_detection", detection)
    return sandbox.sandbox_capabilities()


def test_plain_mode_is_reported(plain_mode):
    assert not plain_mode.namespaces
    assert "no `unshare` binary" in plain_mode.notes[0]
    assert "network is NOT blocked" in plain_mode.describe()


def test_plain_mode_uses_a_host_tempdir_and_removes_it(plain_mode):
    result = execute_code("import posix\nprint(posix.getcwd())\nopen('f', 'w').write('x')")
    workdir = Path(result.stdout.strip())
    assert result.success and workdir.parent.name.startswith("flaxchat-sandbox-")
    assert not workdir.parent.exists()


@needs_root
def test_plain_mode_drops_privileges(plain_mode, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    result = execute_code(f"import os\nprint(os.getuid())\nprint(open({str(secret)!r}).read())")
    assert result.stdout == "65534\n" and result.error.startswith("PermissionError")


def test_plain_mode_kills_background_children(plain_mode):
    code = "import posix\npid = posix.fork()\nif pid == 0:\n    posix.execv('/bin/sleep', ['sleep', '60'])\nprint(pid)"
    start = time.monotonic()
    result = execute_code(code, timeout=10)
    assert result.success and time.monotonic() - start < 3  # its pipes did not keep us
    child = int(result.stdout)  # a host pid: no PID namespace here
    deadline = time.monotonic() + 3
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)


def test_plain_mode_cleanup_does_not_follow_symlinks(plain_mode, tmp_path):
    (tmp_path / "keep").write_text("x")
    result = execute_code(f"import os\nos.symlink({str(tmp_path)!r}, 'link')\nos.mkdir('d')")
    assert result.success
    assert (tmp_path / "keep").read_text() == "x"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a killed child may linger unreaped as a zombie
