"""The python tool: nanochat's `execute_code`, with the operating system as the boundary.

Each call execs a fresh interpreter (`python -I -S -B`: isolated mode, standard library
only; never a fork of this process, so no weights, sockets or secrets are inherited) with
an environment of only PATH, stdin at /dev/null after the code is read, and its own session so
the whole process group can be killed. Where `unshare` works it runs inside new mount,
PID, network, IPC and UTS namespaces: no network at all, a private size-limited tmpfs on
the usual world-writable directories, and every process it starts dies with it. When we are
root, user code runs as uid/gid 65534 (nobody) with no capabilities. In every mode:
no_new_privs, rlimits on CPU time, address space, data, file size, open files, processes
and core dumps, a wall-clock timeout, and capped stdout/stderr. `sandbox_capabilities()`
says which of these are active on this machine; packages/infer/README.md lists them.
"""

import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_GUARD_SOURCE = Path(__file__).with_name("_guard.py").read_text(encoding="utf-8")
_CHILD_ENV = {"PATH": "/usr/bin:/bin"}
_NOBODY = 65534  # the kernel's overflow uid/gid; needs no passwd entry
_SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
_POLL_S = 0.05  # how often we look for the main process having exited
_CHUNK = 65536  # bytes per pipe read or write
# Needs only stdlib modules the prelude has not imported, so it fails when the
# sandbox user cannot read the interpreter's standard library.
_PROBE_CODE = "import csv\nprint('ok')"


class SandboxError(RuntimeError):
    """No working sandbox on this machine; the message says what failed."""


class SandboxArgumentError(ValueError):
    """An argument to execute_code or SandboxLimits is out of range."""


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one execute_code call (nanochat's fields first)."""

    success: bool
    stdout: str
    stderr: str
    error: str | None = None
    timeout: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False  # a stream hit max_output_bytes and the run was killed
    exit_code: int | None = None  # negative: killed by that signal; None on timeout


@dataclass(frozen=True)
class SandboxLimits:
    """Limits beyond nanochat's timeout and memory arguments."""

    max_output_bytes: int = 128 * 1024  # per stream; more kills the run
    max_file_bytes: int = 16 * 1024 * 1024  # RLIMIT_FSIZE: largest file it may write
    max_disk_bytes: int = 64 * 1024 * 1024  # size of the private tmpfs (namespaces only)
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_processes: int = 64  # RLIMIT_NPROC, counted per user (see README)

    def __post_init__(self):
        for name, value in vars(self).items():
            if not isinstance(value, int) or value <= 0:
                raise SandboxArgumentError(f"SandboxLimits.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class SandboxCapabilities:
    """Which protections execute_code applies on this machine, for honest logging."""

    namespaces: bool  # mount, PID, network, IPC, UTS namespaces: no network, private /tmp
    user_namespace: bool  # namespaces made through an unprivileged user namespace
    runs_as: str  # the user the code runs as
    notes: tuple[str, ...]  # why a protection is missing

    def describe(self) -> str:
        if self.namespaces:
            via = " via a user namespace" if self.user_namespace else ""
            scope = (
                f"private mount/PID/network/IPC/UTS namespaces{via} (no network, private "
                "tmpfs on /tmp, /var/tmp, /dev/shm, /run/lock, all processes die with the run)"
            )
        else:
            scope = (
                "NO namespaces: network is NOT blocked, /tmp is shared with the host, "
                "processes that leave the process group can outlive the run"
            )
        text = (
            f"python sandbox: {scope}; runs as {self.runs_as}; no_new_privs; rlimits on "
            "CPU, address space, data, file size, open files, processes, core dumps; "
            "wall-clock timeout kills the process group; stdout/stderr capped"
        )
        return text + "".join(f"\n  note: {n}" for n in self.notes)


@dataclass(frozen=True)
class _Isolation:
    """How children are started; chosen once by probing (see _detect)."""

    unshare: str | None  # path of util-linux unshare: run inside new namespaces
    user_namespace: bool
    uid: int | None  # switch to this uid/gid before the code runs (we are root)
    gid: int | None


def execute_code(
    code: str,
    timeout: float = 5.0,
    maximum_memory_bytes: int | None = 256 * 1024 * 1024,
    limits: SandboxLimits = SandboxLimits(),
) -> ExecutionResult:
    """Run untrusted Python `code` confined; never raises for anything the code does.

    `maximum_memory_bytes` caps the address space of each process (None: no cap).
    Safe to call from many threads at once.
    """
    if not isinstance(code, str):
        raise SandboxArgumentError(f"code must be a str, got {type(code).__name__}")
    if not timeout > 0 or not math.isfinite(timeout):
        raise SandboxArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if maximum_memory_bytes is not None and (not isinstance(maximum_memory_bytes, int) or maximum_memory_bytes <= 0):
        raise SandboxArgumentError(f"maximum_memory_bytes must be a positive int or None, got {maximum_memory_bytes!r}")
    isolation, _ = _detected()
    return _run(isolation, code, timeout, maximum_memory_bytes, limits)


def sandbox_capabilities() -> SandboxCapabilities:
    """Probe (once per process) and report the protections execute_code applies."""
    return _detected()[1]


_detect_lock = threading.Lock()
_detection: tuple[_Isolation, SandboxCapabilities] | None = None


def _detected() -> tuple[_Isolation, SandboxCapabilities]:
    global _detection
    with _detect_lock:
        if _detection is None:
            _detection = _detect()
        return _detection


def _detect() -> tuple[_Isolation, SandboxCapabilities]:
    """Try namespaces first, then plain processes; keep the first that runs the probe."""
    if sys.platform != "linux":
        raise SandboxError(f"execute_code needs Linux (/proc, prctl, rlimits); this is {sys.platform}")
    root = os.geteuid() == 0
    uid = gid = _NOBODY if root else None
    notes = []
    unshare = shutil.which("unshare", path=_SYSTEM_PATH)
    candidates = []
    if unshare is None:
        notes.append("no `unshare` binary (util-linux) found, so no namespaces")
    else:
        candidates.append(_Isolation(unshare, not root, uid, gid))
    candidates.append(_Isolation(None, False, uid, gid))
    for isolation in candidates:
        probe = _run(isolation, _PROBE_CODE, 30.0, 256 * 1024 * 1024, SandboxLimits())
        if probe.success and probe.stdout == "ok\n":
            if not root:
                notes.append("not root: the code runs as this server's own user and can read and write what it can")
            runs_as = f"uid/gid {_NOBODY} (nobody)" if root else f"uid {os.geteuid()} (this server's user)"
            caps = SandboxCapabilities(isolation.unshare is not None, isolation.user_namespace, runs_as, tuple(notes))
            return isolation, caps
        kind = "namespaced" if isolation.unshare else "plain"
        notes.append(f"{kind} sandbox probe failed: {probe.error} {probe.stderr[-500:]!r}")
    raise SandboxError("no working python sandbox:\n" + "\n".join(notes))


def _run(
    isolation: _Isolation, code: str, timeout: float, memory: int | None, limits: SandboxLimits
) -> ExecutionResult:
    config = {
        "namespaces": isolation.unshare is not None,
        "uid": isolation.uid,
        "gid": isolation.gid,
        "disk_bytes": limits.max_disk_bytes,
        "rlimits": _rlimits(isolation, timeout, memory, limits),
    }
    python = [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", _GUARD_SOURCE, json.dumps(config)]
    if isolation.unshare is None:
        command = python
        tempdir = tempfile.mkdtemp(prefix="flaxchat-sandbox-")
    else:
        namespaces = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
        if isolation.user_namespace:
            namespaces += ["--user", "--map-root-user"]
        command = [isolation.unshare, *namespaces, "--", *python]
        tempdir = None  # the prelude makes its workdir inside its private /tmp
    deadline = time.monotonic() + timeout
    try:
        workdir = "/" if tempdir is None else _make_workdir(tempdir, isolation)
        with subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            cwd=workdir,
            env=_CHILD_ENV,
            close_fds=True,
            start_new_session=True,  # its own process group, killed as a whole
        ) as process:
            try:
                out, err, timed_out, truncated = _communicate(
                    process, code.encode("utf-8", "surrogatepass"), deadline, limits.max_output_bytes
                )
            finally:
                _kill_group(process)  # also ends what a finished run left behind
                process.wait()
    finally:
        if tempdir is not None:
            _remove_tree(tempdir)
    return _result(out, err, timed_out, truncated, process.returncode, limits.max_output_bytes)


def _rlimits(isolation: _Isolation, timeout: float, memory: int | None, limits: SandboxLimits) -> dict[str, int]:
    # RLIMIT_NPROC counts every process and thread of the (real) user. As nobody that is
    # the sandboxes; as this server's own user it includes the server, so allow its
    # current count on top (user namespaces make no difference on older kernels).
    if isolation.uid is not None:
        processes = limits.max_processes
    else:
        processes = _task_count(os.getuid()) + limits.max_processes
    rlimits = {
        "RLIMIT_CPU": math.ceil(timeout) + 1,
        "RLIMIT_FSIZE": limits.max_file_bytes,
        "RLIMIT_NOFILE": limits.max_open_files,
        "RLIMIT_NPROC": processes,
        "RLIMIT_CORE": 0,
    }
    if memory is not None:
        rlimits["RLIMIT_AS"] = rlimits["RLIMIT_DATA"] = memory
    return rlimits


def _task_count(uid: int) -> int:
    """Processes and threads whose real uid is `uid` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in Path(entry.path, "status").read_text().splitlines())
        except OSError:
            continue  # exited while we looked
        if int(fields["Uid"].split()[0]) == uid:
            count += int(fields["Threads"])
    return count


def _communicate(
    process: subprocess.Popen, payload: bytes, deadline: float, cap: int
) -> tuple[bytes, bytes, bool, bool]:
    """Feed the code on stdin, read at most `cap` bytes per stream until EOF or deadline.

    Returns (stdout, stderr, timed_out, truncated).
    """
    buffers = {process.stdout: bytearray(), process.stderr: bytearray()}
    pending = memoryview(payload)
    exited = timed_out = truncated = False
    with selectors.DefaultSelector() as selector:
        os.set_blocking(process.stdin.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE)
        for stream in buffers:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map() and not truncated:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = not exited  # a finished program's leftovers don't count
                break
            for key, _ in selector.select(min(remaining, _POLL_S)):
                stream = key.fileobj
                if stream is process.stdin:
                    try:
                        pending = pending[os.write(stream.fileno(), pending[:_CHUNK]) :]
                    except BrokenPipeError:
                        pending = pending[:0]  # it died before reading everything
                    if not pending:
                        selector.unregister(stream)
                        stream.close()
                    continue
                data = os.read(stream.fileno(), _CHUNK)
                if not data:
                    selector.unregister(stream)
                    continue
                buffer = buffers[stream]
                room = cap - len(buffer)
                buffer += data[:room]
                truncated = truncated or len(data) > room
            if not exited and _has_exited(process.pid):
                exited = True
                _kill_group(process)  # background children would otherwise hold our pipes
    return bytes(buffers[process.stdout]), bytes(buffers[process.stderr]), timed_out, truncated


def _has_exited(pid: int) -> bool:
    # WNOWAIT leaves it unreaped, so its pid (our process group id) cannot be reused yet.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # everything in it is gone already


def _make_workdir(tempdir: str, isolation: _Isolation) -> str:
    """The code's cwd inside our temp dir, which the sandbox user cannot rename or list."""
    workdir = os.path.join(tempdir, "work")
    os.mkdir(workdir, 0o700)
    if isolation.uid is not None:
        os.chmod(tempdir, 0o711)
        os.chown(workdir, isolation.uid, isolation.gid)
    return workdir


def _remove_tree(path: str) -> None:
    if os.geteuid() == 0:
        shutil.rmtree(path)  # nothing the sandbox user did can stop root
        return
    # The code ran as our own user: it may have made directories unreadable, or moved
    # things away. Cleanup is best effort and must not fail the call (see README).
    for parent, dirs, _ in os.walk(path):
        for name in dirs:
            child = os.path.join(parent, name)
            if not os.path.islink(child):
                os.chmod(child, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _result(out: bytes, err: bytes, timed_out: bool, truncated: bool, returncode: int, cap: int) -> ExecutionResult:
    if timed_out:
        return ExecutionResult(
            success=False, stdout="", stderr="", error="Execution timed out (process killed)", timeout=True
        )
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    if truncated:
        error = f"Output limit exceeded ({cap} bytes per stream; process killed)"
    elif returncode == 0:
        error = None
    elif lines := stderr.strip().splitlines():
        error = lines[-1]  # the last line of a traceback names the exception
    elif returncode < 0:
        error = f"Execution failed (killed by {_signal_name(-returncode)})"
    else:
        error = "Execution failed"
    return ExecutionResult(
        success=returncode == 0 and not truncated,
        stdout=stdout,
        stderr=stderr,
        error=error,
        memory_exceeded="MemoryError" in stderr,
        output_truncated=truncated,
        exit_code=returncode,
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
