"""Who holds a lock on a file: so "in use" errors name the process, at once.

RocksDB locks ``DB/LOCK`` and ``abode up`` locks ``run/up.lock`` with POSIX record
locks (``fcntl``); ``F_GETLK`` tells another process the holder's pid. The kernel drops
such a lock when its holder exits, however it exits, so a lock that is held has a live
holder: there is nothing to wait for.

Linux only (``struct flock`` differs elsewhere); other systems get None and callers
fall back to waiting for the lock.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys

# struct flock on Linux (64-bit off_t): l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = "hhqqi4x"

__all__ = ["describe_process", "is_locked", "lock_holder", "try_lock"]


def lock_holder(path: str) -> int | None:
    """The pid of another process holding a lock on ``path``, or None.

    Never call it on a file this process has locked: closing the descriptor it opens
    would release this process's own POSIX locks on the file.
    """
    if sys.platform != "linux":
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return None
    finally:
        os.close(fd)
    l_type, _, _, _, pid = struct.unpack(_FLOCK, answer[: struct.calcsize(_FLOCK)])
    return pid if l_type != fcntl.F_UNLCK and pid > 0 else None


def is_locked(path: str) -> bool:
    """Whether another process holds a lock on ``path`` (an existing file)."""
    if sys.platform == "linux":
        return lock_holder(path) is not None
    fd = try_lock(path)  # elsewhere: try to take it, and let go at once
    if fd is None:
        return True
    os.close(fd)
    return False


def describe_process(pid: int) -> str:
    """``pid 123 (abode dev app.py ...)``: its command line where /proc has it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return f"pid {pid}"
    if len(argv) >= 3 and argv[1:3] == ["-m", "abode"]:
        argv = ["abode", *argv[3:]]  # `python -m abode ...`, as the user typed it
    elif argv and os.path.basename(argv[0]).startswith("python") and len(argv) > 1 and \
            os.path.basename(argv[1]) == "abode":
        argv = argv[1:]  # the `abode` script run by its interpreter
    if argv:
        argv[0] = os.path.basename(argv[0])
    text = " ".join(argv)
    return f"pid {pid} ({text[:500]})" if text else f"pid {pid}"


def try_lock(path: str) -> int | None:
    """Take an exclusive lock on ``path`` (created if missing) for as long as this
    process lives; returns the open descriptor, or None if another process holds it.
    Keep the descriptor open: closing it releases the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.set_inheritable(fd, False)
    return fd
