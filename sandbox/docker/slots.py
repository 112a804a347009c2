"""Node-wide concurrency slots: flock'ed files shared by every process using one directory."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import stat
import time
from collections.abc import Iterator

# Shared by every worker on the node; SlotPool refuses it unless this user owns it.
DEFAULT_LOCK_DIR = "/tmp/evalplatform-docker-slots"  # noqa: S108


class SlotsBusy(Exception):
    """No concurrency slot became free within the wait."""


class SlotPool:
    """``size`` slots shared by every process on this node that uses ``directory``.

    A slot is an exclusive ``flock`` on ``directory/slot-N``: the kernel releases it when the
    holder closes the descriptor or dies, so a crashed worker never leaks a slot.
    """

    def __init__(self, directory: str, size: int) -> None:
        if size < 1:
            raise ValueError("a slot pool needs at least one slot")
        self.directory = directory
        self.size = size

    @contextlib.contextmanager
    def acquire(self, wait_s: float) -> Iterator[int]:
        """Hold a free slot for the ``with`` block; raise ``SlotsBusy`` after ``wait_s``."""
        self._ensure_directory()
        deadline = time.monotonic() + wait_s
        while True:
            # Start at a random slot so that waiters do not all pile on slot 0.
            first = random.randrange(self.size)  # noqa: S311 (load spreading, not secrecy)
            for n in range(self.size):
                index = (first + n) % self.size
                fd = os.open(
                    os.path.join(self.directory, f"slot-{index}"),
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield index
                finally:
                    os.close(fd)  # closing drops the flock
                return
            if time.monotonic() >= deadline:
                raise SlotsBusy
            time.sleep(0.05)

    def _ensure_directory(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        info = os.lstat(self.directory)
        # In a shared /tmp another user could pre-create the directory or a symlink to it.
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise OSError(
                errno.EPERM, "slot directory is not a directory owned by this user", self.directory
            )
