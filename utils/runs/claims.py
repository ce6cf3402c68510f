"""Run claims: two sweeps on one store train each run once, and a killed sweep still resumes.

Before a sweep trains a run it takes the run's claim, a file ``.s<seed>.claim`` next to the
run directory (``results/<experiment>/<method>/d<density>/.s21.claim``) held under an
exclusive, non-blocking ``flock``.  The kernel releases the lock when its holder exits, however
it exits (``kill -9`` included), so a claim whose process is gone is taken over by the next
sweep without any liveness guess; the file also records the holder's pid and host for people.
After taking a claim the sweep checks the store again: a concurrent sweep may have finished
the run between the two looks.  On network filesystems Linux maps ``flock`` onto POSIX
record locks (NFS ≥ v3 with lockd), which cluster nodes share.

Example::

    with claim_run(path) as held:
        if held:            # nobody else is training it
            train_and_store(path)
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUFFIX = ".claim"


def claim_path(run_dir: str | os.PathLike) -> Path:
    """The claim file of a run directory: a hidden sibling, e.g. ``d10/.s21.claim``."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}{SUFFIX}"


@contextmanager
def claim_run(run_dir: str | os.PathLike) -> Iterator[bool]:
    """Hold the claim of ``run_dir`` for the ``with`` block; yields False (and holds nothing)
    when another live process holds it."""
    path = claim_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path)
    if fd is None:
        yield False
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())
        try:
            yield True
        finally:
            # Unlink while still holding the lock: a process that opened the old file before the
            # unlink gets the lock only afterwards and then finds the run stored.
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


def _open_locked(path: Path) -> int | None:
    """Open and lock the claim file at ``path``; None if a live process holds it.  A lock taken
    on a file that was unlinked meanwhile (its holder finished) does not count: retry on the
    file now at ``path``, so two processes never both hold a run."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _lock(fd):
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def release_stale(root: str | os.PathLike) -> int:
    """Remove the claim files under ``root`` that no live process holds (left by ``kill -9``).
    Returns the count."""
    count = 0
    for path in Path(root).rglob(f".*{SUFFIX}"):
        run_dir = path.parent / path.name[1:-len(SUFFIX)]
        with claim_run(run_dir) as held:   # taking the claim removes its file on exit
            count += bool(held)
    return count


def _lock(fd: int, tries: int = 5) -> bool:
    """Take the exclusive lock, retrying briefly: :func:`holder` probes with a shared lock for
    microseconds, and a probe must not make a sweep skip a run nobody trains."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.02)
    return False


def holder(run_dir: str | os.PathLike) -> dict | None:
    """``{"pid", "host", "since"}`` of the live process holding the run's claim, else None."""
    path = claim_path(run_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def is_claimed(run_dir: str | os.PathLike) -> bool:
    """Whether a live process holds the claim of ``run_dir``."""
    return holder(run_dir) is not None
