"""The sandbox child's prelude, run as `python -I -S -B -X utf8 -c <this file> <config>`.

It is never imported: sandbox.py passes its text with -c, so the child needs no access
to the installed package. Standard library only. Reads the untrusted code from stdin,
then (as root inside fresh namespaces where the parent set them up) builds a private
filesystem view, drops privileges, applies rlimits, disables destructive functions
(nanochat's guard, defense in depth only) and runs the code as a fresh __main__.
"""

import builtins
import ctypes
import faulthandler
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import types

# <sys/mount.h>, <linux/prctl.h>, <linux/capability.h>
MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC = 0x2, 0x4, 0x1000, 0x2000, 0x4000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
CAPABILITY_VERSION_3 = 0x20080522
SIGKILL = 9
M_ARENA_MAX = -8  # <malloc.h>

# Directories any user may write to: each gets the same private, size-limited tmpfs.
SHARED_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
WORKDIR = "/tmp/sandbox"

libc = ctypes.CDLL(None, use_errno=True)


def main():
    config = json.loads(sys.argv[1])
    source = sys.stdin.buffer.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the user code's stdin reads nothing
    os.close(devnull)
    if config["namespaces"]:
        private_filesystem(config)
    if config["uid"] is not None:
        drop_to_user(config["uid"], config["gid"])
    elif config["namespaces"]:
        drop_capabilities()  # "root" of an unprivileged user namespace
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    if config["namespaces"]:
        # We are PID 1 of the sandbox's PID namespace; dying takes every process in it
        # along. Dying with our parent (unshare) covers a kill that misses our group.
        check(libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    if hasattr(libc, "mallopt"):
        # glibc reserves a 64 MiB malloc arena per thread; under RLIMIT_AS that would
        # leave room for only a few threads. One shared arena costs nothing here.
        libc.mallopt(M_ARENA_MAX, 1)
    for name, limit in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (limit, limit))
    disable_destructive_functions()
    run_as_main(source)


def check(rc, what):
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source, target, fstype, flags, data):
    rc = libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    check(rc, f"mount {target}")


def private_filesystem(config):
    """Fresh tmpfs over the world-writable dirs, interpreter visible, private workdir."""
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={config['disk_bytes']},mode=1777")
    for path in SHARED_WRITABLE_DIRS[1:]:
        if os.path.isdir(path) and not os.path.islink(path):
            mount("/tmp", path, None, MS_BIND, None)
    if config["uid"] is not None:
        expose_interpreter(config["uid"], config["gid"])
    os.mkdir(WORKDIR, 0o700)
    if config["uid"] is not None:
        os.chown(WORKDIR, config["uid"], config["gid"])
    os.chdir(WORKDIR)


def expose_interpreter(uid, gid):
    """Make the interpreter readable by the sandbox user when it lives under a closed dir.

    E.g. a pyenv Python in /root (mode 700): bind its prefix aside, cover the closed
    directory with an empty tmpfs (which also hides the rest of it), and move the bind
    back to the same path, so sys.path and sys.executable stay valid after the drop.
    """
    prefixes = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)})
    prefixes = [p for p in prefixes if not any(p.startswith(q + os.sep) for q in prefixes)]
    closed = {p: closed_ancestor(p, uid, gid) for p in prefixes}
    closed = {p: a for p, a in closed.items() if a is not None}
    staged = []
    for i, prefix in enumerate(closed):
        stage = f"/tmp/.interpreter-{i}"
        os.mkdir(stage, 0o755)
        mount(prefix, stage, None, MS_BIND | MS_REC, None)
        staged.append((stage, prefix))
    for ancestor in sorted(set(closed.values())):
        mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for stage, prefix in staged:
        os.makedirs(prefix, 0o755, exist_ok=True)
        mount(stage, prefix, None, MS_MOVE, None)
        os.rmdir(stage)


def closed_ancestor(path, uid, gid):
    """The topmost proper ancestor of `path` that uid/gid cannot traverse, or None."""
    parts = path.split(os.sep)[1:-1]
    current = ""
    for part in parts:
        current += os.sep + part
        st = os.stat(current)
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return current
    return None


def drop_to_user(uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # from root: clears every capability, irreversibly


def drop_capabilities():
    """Shed the user namespace's capabilities so mounts and ids can no longer change."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):
        check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "prctl(CAPBSET_DROP)")
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty
    check(libc.capset(header, data), "capset")


def disable_destructive_functions():
    """nanochat's guard: stops accidents, not an adversary (the OS limits do that)."""
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    builtins.help = None
    os.environ["OMP_NUM_THREADS"] = "1"
    disabled = """
        kill system putenv remove removedirs rmdir fchdir setuid fork forkpty killpg rename
        renames truncate replace unlink fchmod fchown chmod chown chroot lchflags lchmod
        lchown getcwd chdir
    """
    for name in disabled.split():
        setattr(os, name, None)
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, None)
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def run_as_main(source):
    """Run the code as a fresh __main__ module, so none of this prelude is in its globals."""
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module
    sys.argv = [""]
    try:
        exec(compile(source, "<llm>", "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        # Report it as Python would, without this prelude's frames.
        exc.with_traceback(exc.__traceback__.tb_next)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        sys.exit(1)


if __name__ == "__main__":  # -c runs this as __main__; importing it does nothing
    main()
