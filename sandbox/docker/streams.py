"""Read a container's attach stream: demultiplex its frames with a byte cap, feed its stdin."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

# Docker's attach stream frame header: stream id (1 = stdout, 2 = stderr), 3 pad bytes, size.
_FRAME_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
_CHUNK = 64 * 1024


@dataclass
class _CappedStreams:
    """Demultiplexes Docker attach frames, keeping at most ``cap`` bytes per stream (plus
    ``stderr_room`` on stderr, where the loader's report follows the program's output)."""

    cap: int
    stderr_room: int = 0
    out: dict[int, bytearray] = field(
        default_factory=lambda: {_STDOUT: bytearray(), _STDERR: bytearray()}
    )
    truncated: dict[int, bool] = field(default_factory=lambda: {_STDOUT: False, _STDERR: False})
    _header: bytearray = field(default_factory=bytearray)
    _stream: int = 0
    _left: int = 0  # payload bytes still due for the current frame

    def feed(self, data: bytes) -> bool:
        """Consume ``data``; return True once either stream went over the cap."""
        view = memoryview(data)
        while view:
            if not self._left:
                need = _FRAME_HEADER.size - len(self._header)
                self._header += view[:need]
                view = view[need:]
                if len(self._header) == _FRAME_HEADER.size:
                    self._stream, self._left = _FRAME_HEADER.unpack(self._header)
                    self._header.clear()
                continue
            chunk, view = view[: self._left], view[self._left :]
            self._left -= len(chunk)
            # Stream 0 (stdin echo) never comes without a TTY; fold anything odd into stdout.
            target = _STDERR if self._stream == _STDERR else _STDOUT
            buf = self.out[target]
            room = self.cap + (self.stderr_room if target == _STDERR else 0) - len(buf)
            buf += chunk[:room]
            if len(chunk) > room:
                self.truncated[target] = True
                return True
        return False

    def take_stderr(self, mark: bytes) -> tuple[bytes, bool, int | None]:
        """The program's stderr, capped, its truncation flag, and the peak memory the loader
        reported after it (None when the report is not the stream's last line)."""
        stderr, peak = bytes(self.out[_STDERR]), None
        report = re.search(re.escape(mark) + rb"([0-9]{1,20})?\n\Z", stderr)
        if report:
            stderr = stderr[: report.start()]
            peak = int(report.group(1)) if report.group(1) else None
        truncated = self.truncated[_STDERR] or len(stderr) > self.cap
        return stderr[: self.cap], truncated, peak


def _pump(sock: socket.socket, stdin: bytes, streams: _CappedStreams, deadline: float) -> str:
    """Feed ``stdin`` and read output until EOF, the cap or ``deadline``.

    Returns ``"eof"``, ``"capped"`` or ``"deadline"``. One loop does both directions so a
    program that fills its output pipe before reading stdin cannot deadlock us.
    """
    sock.setblocking(False)
    pending = memoryview(stdin)
    writing = True
    if not pending:
        writing = _shut_write(sock)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "deadline"
        readable, writable, _ = select.select([sock], [sock] if writing else [], [], remaining)
        if writable:
            try:
                sent = sock.send(pending[:_CHUNK])
            except BlockingIOError:
                sent = 0
            except OSError:
                # The program exited or closed stdin; what it wrote still matters.
                sent, pending = 0, memoryview(b"")
            pending = pending[sent:]
            if not pending:
                writing = _shut_write(sock)
        if readable:
            try:
                data = sock.recv(_CHUNK)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return "eof"
            if not data:
                return "eof"
            if streams.feed(data):
                return "capped"


def _shut_write(sock: socket.socket) -> bool:
    """Half-close: with StdinOnce the engine turns this into EOF on the program's stdin."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    return False


def _raw_socket(attached: Any) -> socket.socket:
    """The socket under docker-py's attach object (a SocketIO for unix and tcp URLs)."""
    if isinstance(attached, socket.socket):
        return attached
    inner = getattr(attached, "_sock", None)
    if isinstance(inner, socket.socket):
        return inner
    raise TypeError(f"cannot stream over {type(attached).__name__}")


def _close_quietly(attached: Any) -> None:
    """Tear the attach connection down for real.

    Closing docker-py's wrapper is not enough: the HTTP response still references the socket,
    and while the engine blocks writing output nobody reads, it cannot finish killing and
    removing the container. ``shutdown`` ends the connection whatever else holds the socket.
    """
    with contextlib.suppress(Exception):
        sock = _raw_socket(attached)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    with contextlib.suppress(Exception):
        attached.close()
    response = getattr(attached, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()
