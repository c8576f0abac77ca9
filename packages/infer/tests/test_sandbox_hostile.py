"""A battery of hostile programs: each must be contained by execute_code.

The programs undo nanochat's Python-level guard where it is in the way (posix.fork,
posix.kill, ctypes), so what is tested is the operating-system boundary. They run once,
concurrently, in a module fixture (the process bombs alone afterwards, since they share
the sandbox user's process limit); each case then checks its own result, and the final
tests check that the test process, its environment and files are untouched and that no
process the battery started is left.
"""

import os
import resource
import signal
import socket
import string
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flaxchat.infer.tools import ExecutionResult, SandboxLimits, execute_code, sandbox_capabilities

CAPS = sandbox_capabilities()
IS_ROOT = os.geteuid() == 0
LIMITS = SandboxLimits()
SLOW = 1.5  # timeout for the programs that must be killed
MARGIN = 3.0  # scheduling slack on a busy 2-core machine


@dataclass(frozen=True)
class Context:
    marker: str  # in the command line of every process a program leaves behind
    parent_pid: int
    secret_name: str
    secret: str
    secret_file: str  # mode 600, owned by the test's user
    port: int  # a TCP server on 127.0.0.1 that must never see a connection
    repo_dir: str  # a directory of this checkout


@dataclass(frozen=True)
class Case:
    name: str
    code: str  # string.Template: $marker, $parent_pid, $secret_name, $secret_file, $port, $host, $repo
    check: Callable[[ExecutionResult, Context, str], None]  # (result, context, host path)
    timeout: float = 10.0
    needs: frozenset[str] = frozenset()  # "namespaces", "root"
    alone: bool = False  # runs with nothing else in flight


def fails(result, ctx, host):
    assert not result.success


def times_out(result, ctx, host):
    assert result.timeout and not result.success and result.stdout == ""


def out_of_memory(result, ctx, host):
    assert not result.success and result.memory_exceeded


def error_has(*texts):
    def check(result, ctx, host):
        assert not result.success and any(t in result.error for t in texts), result

    return check


def host_path_absent(result, ctx, host):
    assert not os.path.lexists(host), f"{host} appeared on the host"


def no_secret(result, ctx, host):
    assert ctx.secret not in result.stdout + result.stderr


def no_shadow(result, ctx, host):
    assert "root:" not in result.stdout  # /etc/shadow's first line


def prints(expected):
    def check(result, ctx, host):
        assert result.stdout == expected, result

    return check


def all_of(*checks):
    def check(result, ctx, host):
        for c in checks:
            c(result, ctx, host)

    return check


def capped(stream):
    def check(result, ctx, host):
        assert not result.success and result.output_truncated
        assert len(getattr(result, stream).encode()) == LIMITS.max_output_bytes

    return check


def crashed_with(sig):
    def check(result, ctx, host):
        assert not result.success and result.exit_code == -sig, result

    return check


def returns_promptly(result, ctx, host):
    # Had a leftover process kept our pipes open, the run would have timed out.
    assert result.success and result.stdout == "parent done\n", result


NS, ROOT = frozenset({"namespaces"}), frozenset({"root"})
SLEEPER = "posix.execv('/bin/sleep', ['$marker', '60'])"

CASES = [
    # --- processes --------------------------------------------------------------
    Case(
        "fork_bomb",
        f"""
import posix
root = posix.getpid()
while True:
    try:
        posix.fork()
    except OSError:
        break
if posix.getpid() != root:
    {SLEEPER}
raise SystemExit('fork limit reached')
""",
        fails,
        alone=True,
    ),
    Case(
        "fork_bomb_ctypes",
        f"""
import ctypes, posix
libc = ctypes.CDLL(None)
root = posix.getpid()
for _ in range(100000):
    if libc.fork() < 0:
        break
if posix.getpid() != root:
    {SLEEPER}
raise SystemExit('fork limit reached')
""",
        fails,
        alone=True,
    ),
    Case(
        "fork_bomb_multiprocessing",
        f"""
import os, posix
os.fork, os.getcwd, os.kill = posix.fork, posix.getcwd, posix.kill  # undo the prelude
import multiprocessing
def sleeper():
    {SLEEPER}
context = multiprocessing.get_context('fork')
while True:
    context.Process(target=sleeper, daemon=True).start()
""",
        fails,
        alone=True,
    ),
    Case(
        "spawn_bomb",
        """
import os
while True:
    os.posix_spawn('/bin/sleep', ['$marker', '60'], {})
""",
        fails,
        alone=True,
    ),
    Case(
        "thread_bomb",
        """
import threading, time
while True:
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
""",
        error_has("can't start new thread"),
        alone=True,
    ),
    Case(
        "kill_everything_visible",
        """
import ctypes, posix
ctypes.CDLL(None).kill(-1, 9)
posix.kill(-1, 9)
print('still here')
""",
        lambda r, c, h: None,
        needs=NS,
        alone=True,
    ),  # without namespaces: every nobody process
    Case(
        "background_double_fork",
        f"""
import posix
if posix.fork() == 0:
    posix.setsid()
    if posix.fork() == 0:
        {SLEEPER}
    posix._exit(0)
print('parent done')
""",
        returns_promptly,
        needs=NS,
    ),
    Case(
        "leave_the_process_group",
        """
import posix
posix.setsid()  # the timeout's group kill misses us now; dying with unshare must not
posix.execv('/bin/sleep', ['$marker', '60'])
""",
        times_out,
        timeout=SLOW,
        needs=NS,
    ),
    Case(
        "background_holds_pipes",
        f"""
import posix
if posix.fork() == 0:
    {SLEEPER}
print('parent done')
""",
        returns_promptly,
    ),
    Case(
        "spawn_shell",
        """
import os
pid = os.posix_spawn('/bin/sh', ['sh', '-c', 'echo pwned > $host; cat /etc/shadow; sleep 60 # $marker'], {})
os.waitpid(pid, 0)
""",
        all_of(times_out, host_path_absent),
        timeout=SLOW,
        needs=NS,
    ),
    Case(
        "subprocess_restored",
        """
import importlib, subprocess
importlib.reload(subprocess)  # undo the prelude's Popen = None
print(subprocess.run(['sh', '-c', 'echo pwned > $host; cat /etc/shadow'], capture_output=True).stdout)
""",
        all_of(no_shadow, host_path_absent),
        needs=NS,
    ),
    Case(
        "os_system_restored",
        """
import posix
print(posix.system('id -u; cat /etc/shadow 2>/dev/null; echo pwned > $host'))
""",
        all_of(no_shadow, host_path_absent),
        needs=NS,
    ),
    Case(
        "exec_shell",
        """
import posix
posix.execv('/bin/sh', ['sh', '-c', 'cat /etc/shadow; env; echo pwned > $host'])
""",
        all_of(no_shadow, no_secret, host_path_absent),
        needs=NS,
    ),
    Case(
        "ctypes_system",
        """
import ctypes
ctypes.CDLL(None).system(b'cat /etc/shadow; echo pwned > $host')
""",
        all_of(no_shadow, host_path_absent),
        needs=NS,
    ),
    # --- the parent process -------------------------------------------------------
    Case(
        "kill_parent",
        """
import posix
posix.kill($parent_pid, 9)
""",
        fails,
    ),
    Case(
        "kill_parent_ctypes",
        """
import ctypes
print(ctypes.CDLL(None).kill($parent_pid, 9))
""",
        prints("-1\n"),
    ),
    Case(
        "kill_parent_group",
        """
import posix
posix.killpg(posix.getpgid($parent_pid), 9)
""",
        fails,
    ),
    Case(
        "kill_own_parent",
        """
import posix
posix.kill(posix.getppid(), 9)
""",
        lambda r, c, h: None,
    ),  # in a PID namespace getppid() is 0; the test survives either way
    Case(
        "ptrace_parent",
        """
import ctypes
print(ctypes.CDLL(None).ptrace(16, $parent_pid, 0, 0))
""",
        prints("-1\n"),
    ),
    Case(
        "parent_environ",
        """
print(open('/proc/$parent_pid/environ', 'rb').read())
""",
        all_of(fails, no_secret),
    ),
    Case(
        "all_environs",
        """
import os
for pid in os.listdir('/proc'):
    try:
        data = open(f'/proc/{pid}/environ', 'rb').read()
    except OSError:
        continue
    if b'$secret_name' in data:
        print(pid, data)
""",
        all_of(prints(""), no_secret),
    ),
    Case(
        "own_environ",
        """
import os
print(os.environ.get('$secret_name'))
try:
    print(open('/proc/self/environ', 'rb').read().count(b'$secret_name'))
except PermissionError:  # after the switch to nobody the process is not dumpable
    print(0)
""",
        all_of(prints("None\n0\n"), no_secret),
    ),
    Case(
        "secret_file",
        """
print(open('$secret_file').read())
""",
        all_of(error_has("PermissionError", "FileNotFoundError"), no_secret),
        needs=ROOT,
    ),
    Case(
        "symlink_to_secret",
        """
import os
os.symlink('$secret_file', 'link')
print(open('link').read())
""",
        all_of(fails, no_secret),
        needs=ROOT,
    ),
    Case(
        "hardlink_shadow",
        """
import os
os.link('/etc/shadow', 'shadow')
print(open('shadow').read())
""",
        all_of(fails, no_shadow),
    ),
    Case(
        "read_shadow",
        """
print(open('/etc/shadow').read())
""",
        all_of(error_has("PermissionError"), no_shadow),
        needs=ROOT,
    ),
    Case(
        "setuid_root",
        """
import posix
posix.setuid(0)
""",
        error_has("PermissionError"),
        needs=ROOT,
    ),
    Case(
        "raise_rlimits",
        """
import sys
del sys.modules['resource']
import resource
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
""",
        error_has("not allowed to raise maximum limit"),
    ),
    # --- the filesystem -----------------------------------------------------------
    Case(
        "write_host_tmp",
        """
open('$host', 'w').write('pwned')
""",
        host_path_absent,
        needs=NS,
    ),
    Case(
        "write_var_tmp",
        """
open('/var/tmp/' + '$host'.rsplit('/', 1)[1], 'w').write('pwned')
""",
        lambda r, c, h: host_path_absent(r, c, "/var/tmp/" + h.rsplit("/", 1)[1]),
        needs=NS,
    ),
    Case(
        "write_dev_shm",
        """
open('/dev/shm/' + '$host'.rsplit('/', 1)[1], 'w').write('pwned')
""",
        lambda r, c, h: host_path_absent(r, c, "/dev/shm/" + h.rsplit("/", 1)[1]),
        needs=NS,
    ),
    Case(
        "write_repo",
        """
open('$repo/$marker-pwned', 'w').write('pwned')
""",
        # A checkout under /tmp sits behind the sandbox's private /tmp: not found instead of denied.
        all_of(error_has("PermissionError", "FileNotFoundError"),
               lambda r, c, h: host_path_absent(r, c, f"{c.repo_dir}/{c.marker}-pwned")),
        needs=ROOT,
    ),
    Case(
        "cwd_escape",
        """
import posix
for _ in range(8):
    posix.chdir('..')
for d in ('/tmp', '/'):
    try:
        open(d + '/' + '$host'.rsplit('/', 1)[1], 'w').write('pwned')
    except OSError as e:
        print(d, e.errno)
""",
        all_of(host_path_absent, lambda r, c, h: host_path_absent(r, c, "/" + h.rsplit("/", 1)[1])),
        needs=NS,
    ),
    Case(
        "remount_tmp",
        """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.unshare(0x10000000 | 0x00020000), libc.umount2(b'/tmp', 2))  # NEWUSER|NEWNS, MNT_DETACH
open('$host', 'w').write('pwned')
""",
        host_path_absent,
        needs=NS,
    ),
    Case(
        "write_proc",
        """
open('/proc/self/oom_score_adj', 'w').write('-1000')
""",
        error_has("PermissionError"),
    ),
    Case(
        "write_proc_sys",
        """
open('/proc/sys/kernel/hostname', 'w').write('pwned')
""",
        error_has("PermissionError", "OSError"),
    ),
    Case(
        "file_too_large",
        """
with open('big', 'wb') as f:
    while True:
        f.write(bytes(1 << 20))
""",
        error_has("File too large"),
    ),
    Case(
        "fill_disk",
        """
for i in range(10 ** 6):
    with open(f'f{i}', 'wb') as f:
        f.write(bytes(1 << 20))
""",
        error_has("No space left on device"),
        needs=NS,
    ),
    Case(
        "exhaust_fds",
        """
files = []
while True:
    files.append(open('/dev/null'))
""",
        error_has("Too many open files"),
    ),
    # --- the network --------------------------------------------------------------
    Case(
        "connect_local_server",
        """
import socket
socket.create_connection(('127.0.0.1', $port), timeout=2)
""",
        error_has("Network is unreachable", "Connection refused"),
        needs=NS,
    ),
    Case(
        "connect_ctypes_raw",
        """
import ctypes, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
print(ctypes.CDLL(None).connect(s.fileno(), ctypes.c_char_p(
    bytes([2, 0]) + $port .to_bytes(2, 'big') + bytes([127, 0, 0, 1]) + bytes(8)), 16))
""",
        prints("-1\n"),
        needs=NS,
    ),
    # --- memory, time, output -----------------------------------------------------
    Case("memory_list", "x = [0] * (10 ** 9)", out_of_memory),
    Case(
        "memory_growth",
        """
b = bytearray()
while True:
    b.extend(bytes(1 << 24))
""",
        out_of_memory,
    ),
    Case(
        "memory_mmap",
        """
import mmap
m = mmap.mmap(-1, 1 << 34)
""",
        error_has("Cannot allocate memory"),
    ),
    Case(
        "deep_recursion",
        """
import sys
sys.setrecursionlimit(10 ** 7)
def f(n):
    return f(n + 1)
f(0)
""",
        fails,
        timeout=SLOW,
    ),
    Case(
        "c_stack_overflow",
        """
import sys
sys.setrecursionlimit(10 ** 7)
class A:
    def __repr__(self):
        return repr(self)
repr(A())
""",
        fails,
    ),
    Case(
        "segfault",
        """
import ctypes
ctypes.string_at(0)
""",
        crashed_with(signal.SIGSEGV),
    ),
    Case("infinite_loop", "while True:\n    pass", times_out, timeout=SLOW),
    Case(
        "ignores_signals",
        """
import signal
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
    signal.signal(s, signal.SIG_IGN)
while True:
    pass
""",
        times_out,
        timeout=SLOW,
    ),
    Case("sleep_past_timeout", "import time\ntime.sleep(120)", times_out, timeout=SLOW),
    Case(
        "cpu_threads",
        """
import threading
def spin():
    while True:
        pass
for _ in range(4):
    threading.Thread(target=spin).start()
""",
        fails,
        timeout=SLOW,
    ),
    Case(
        "huge_stdout",
        """
import sys
while True:
    sys.stdout.write('x' * 65536)
""",
        capped("stdout"),
    ),
    Case(
        "huge_stderr",
        """
import sys
while True:
    sys.stderr.write('x' * 65536)
""",
        capped("stderr"),
    ),
    Case("one_huge_line", "print('x' * 10 ** 8)", capped("stdout")),
]


def _applicable(case: Case) -> bool:
    return ("namespaces" not in case.needs or CAPS.namespaces) and ("root" not in case.needs or IS_ROOT)


class _CountingServer:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


@dataclass
class Battery:
    ctx: Context
    server: _CountingServer
    env_before: dict[str, str]
    env_after: dict[str, str] = field(default_factory=dict)
    results: dict[str, tuple[ExecutionResult, float]] = field(default_factory=dict)
    maxrss_growth_kib: int = 0


@pytest.fixture(scope="module")
def battery():
    marker = f"flaxchat-hostile-{uuid.uuid4().hex}"
    repo_dir = Path(__file__).parent
    secret_file = repo_dir / f".{marker}-secret"
    secret = f"s3cret-{uuid.uuid4().hex}"
    secret_file.touch(0o600)
    secret_file.chmod(0o600)
    secret_file.write_text(secret)
    secret_name = "FLAXCHAT_TEST_SECRET"
    server = _CountingServer()
    env_before = dict(os.environ)
    ctx = Context(marker, os.getpid(), secret_name, secret, str(secret_file), server.port, str(repo_dir))
    run = Battery(ctx, server, env_before)
    os.environ[secret_name] = secret
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        cases = [c for c in CASES if _applicable(c)]
        together = [c for c in cases if not c.alone]
        with ThreadPoolExecutor(4) as pool:
            run.results.update(zip((c.name for c in together), pool.map(lambda c: _run(c, ctx), together), strict=True))
        for case in cases:
            if case.alone:
                run.results[case.name] = _run(case, ctx)
        run.maxrss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        del os.environ[secret_name]
        run.env_after = dict(os.environ)
        yield run
    finally:
        os.environ.pop(secret_name, None)
        server.close()
        secret_file.unlink()


def _run(case: Case, ctx: Context) -> tuple[ExecutionResult, float]:
    host = f"/tmp/{ctx.marker}-{case.name}"
    code = string.Template(case.code).substitute(
        marker=ctx.marker,
        parent_pid=ctx.parent_pid,
        secret_name=ctx.secret_name,
        secret_file=ctx.secret_file,
        port=ctx.port,
        host=host,
        repo=ctx.repo_dir,
    )
    start = time.monotonic()
    result = execute_code(code, timeout=case.timeout, limits=LIMITS)
    return result, time.monotonic() - start


def test_the_battery_is_big_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_program_is_contained(case, battery):
    if not _applicable(case):
        missing = "namespaces (" + "; ".join(CAPS.notes) + ")" if "namespaces" in case.needs else "root"
        pytest.skip(f"needs {missing}")
    result, elapsed = battery.results[case.name]
    assert elapsed < case.timeout + MARGIN, f"took {elapsed:.1f}s"
    case.check(result, battery.ctx, f"/tmp/{battery.ctx.marker}-{case.name}")


def test_no_process_of_the_battery_is_left(battery):
    deadline = time.monotonic() + 5
    while (left := _processes_with(battery.ctx.marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"stray processes: {left}"


def test_the_test_process_is_unharmed(battery):
    assert battery.env_after == battery.env_before
    assert Path(battery.ctx.secret_file).read_text() == battery.ctx.secret
    assert battery.maxrss_growth_kib < 64 * 1024  # output was capped, never buffered whole
    assert battery.server.accepted == 0
    assert execute_code("print('still fine')").stdout == "still fine\n"


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if marker.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found
