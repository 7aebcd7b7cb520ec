"""Kill a process at its k-th file operation, as SIGKILL would, to test what a run leaves behind.

`run_killed_at(fn, k)` forks; the child counts the file operations it (or any of its threads) makes and SIGKILLs
itself just before the k-th, or, for a "torn" kill, at the close of the k-th file it opened for writing after
cutting that file to half of what was written, so that the file is left as a write cut short would leave it. The
parent gets back whether the child was killed (False: fn returned before the k-th operation).

File operations: creating, opening for writing, renaming, replacing, deleting files and folders, fsync, and the
two writers that do their own I/O (safetensors' save_file, torch.save). Forking (rather than starting a new Python)
keeps each try to the cost of the run itself; the parent must have run no multi-threaded torch work
(`torch.set_num_threads(1)` first), or the child's thread pools may hang.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback

_WRITE_MODES = set("wax+")
_CREATE_FLAGS = os.O_CREAT | os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND


class _Counter:
    def __init__(self, kill_at: int, torn: bool):
        self.n = 0
        self.kill_at, self.torn = kill_at, torn
        self.kinds: list[str] = []
        self.lock = threading.Lock()

    def tick(self, what: str) -> bool:
        """Count one operation; True when it is the one to act on."""
        with self.lock:
            hit = self.n == self.kill_at
            self.n += 1
            self.kinds.append(what)
        return hit


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _TornFile(io.RawIOBase):
    """Wraps a file opened for writing; on close, keeps only the first half of what was written, then dies."""

    def __init__(self, f):
        self._f = f

    def __getattr__(self, name):
        return getattr(self._f, name)

    def write(self, data):
        return self._f.write(data)

    def writelines(self, lines):
        return self._f.writelines(lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self._f.flush()
            size = self._f.tell()
            self._f.truncate(size // 2)
            self._f.flush()
        finally:
            _die()


def _install(counter: _Counter) -> None:
    """Patch the file operations of this (child) process."""
    import safetensors.torch
    import torch

    import statelayers.checkpoint

    def guard(what, fn):
        def wrapped(*args, **kwargs):
            if counter.tick(what) and not counter.torn:
                _die()
            return fn(*args, **kwargs)

        return wrapped

    def guard_open(real_open):
        def wrapped(file, mode="r", *args, **kwargs):
            if not (set(str(mode)) & _WRITE_MODES):
                return real_open(file, mode, *args, **kwargs)
            hit = counter.tick("open")
            if hit and not counter.torn:
                _die()
            f = real_open(file, mode, *args, **kwargs)
            return _TornFile(f) if hit else f

        return wrapped

    def guard_os_open(real):
        def wrapped(path, flags, *args, **kwargs):
            if flags & _CREATE_FLAGS and counter.tick("os.open") and not counter.torn:
                _die()
            return real(path, flags, *args, **kwargs)

        return wrapped

    for name in ("replace", "rename", "unlink", "remove", "rmdir", "mkdir", "fsync"):
        setattr(os, name, guard(name, getattr(os, name)))
    os.open = guard_os_open(os.open)
    shutil.rmtree = guard("rmtree", shutil.rmtree)
    tempfile.mkstemp = guard("mkstemp", tempfile.mkstemp)
    tempfile.mkdtemp = guard("mkdtemp", tempfile.mkdtemp)
    builtins.open = guard_open(builtins.open)
    io.open = guard_open(io.open)
    torch.save = guard("torch.save", torch.save)
    statelayers.checkpoint.save_file = guard("save_file", safetensors.torch.save_file)


def run_killed_at(fn, k: int, *, torn: bool = False) -> bool:
    """Run ``fn()`` in a forked child killed at its k-th file operation (see the module's docstring). True when the
    child was killed; False when ``fn`` returned first. An exception in ``fn`` is an AssertionError here."""
    return _run(fn, k, torn)[0]


def file_operations(fn) -> list[str]:
    """The kinds of the file operations ``fn()`` makes, in order ("open" for a file opened for writing), run in a
    forked child."""
    return _run(fn, 1 << 62, False)[1]


def _run(fn, k: int, torn: bool) -> tuple[bool, list[str]]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        code = 0
        counter = _Counter(k, torn)
        try:
            _install(counter)
            fn()
            os.write(w, ("OPS " + " ".join(counter.kinds)).encode())
        except BaseException:
            os.write(w, traceback.format_exc()[-4000:].encode())
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return True, []
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return False, err.split()[1:]
    raise AssertionError(f"the run failed (status {status}) at kill point {k}:\n{err}")


def run_in_child(fn) -> None:
    """Run ``fn()`` in a forked child with no faults; an exception (or a non-zero exit) is an AssertionError here."""
    if run_killed_at(fn, 1 << 62):
        raise AssertionError("the child was killed")
