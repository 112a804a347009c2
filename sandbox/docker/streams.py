"""A container's attach stream: feed its stdin and demultiplex its frames, in one loop."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

# Docker's attach stream frame header: stream id (1 = stdout, 2 = stderr), 3 pad bytes, size.
_FRAME_HEADER = struct.Struct(">BxxxL")
STDOUT, STDERR = 1, 2
_CHUNK = 64 * 1024


@dataclass
class Frames:
    """Demultiplexes Docker attach frames as they arrive, into (stream, bytes) chunks."""

    _header: bytearray = field(default_factory=bytearray)
    _stream: int = 0
    _left: int = 0  # payload bytes still due for the current frame

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        chunks: list[tuple[int, bytes]] = []
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
            chunks.append((STDERR if self._stream == STDERR else STDOUT, bytes(chunk)))
        return chunks


class Pump:
    """Both directions of one attach socket in one ``select`` loop: bytes queued with
    ``send`` go out as the engine takes them, frames come back from ``receive``. A program
    that writes a lot before reading its input cannot deadlock the host."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self._pending = bytearray()
        self._writing = True
        self._frames = Frames()

    def send(self, data: bytes) -> None:
        self._pending += data

    def finish(self) -> None:
        """Half-close once everything queued is sent: the stream's end for the sandbox."""
        self._writing = False
        if not self._pending:
            _shut_write(self.sock)

    def receive(self, deadline: float) -> list[tuple[int, bytes]] | None:
        """Send what can go, then return the frames that arrived by ``deadline`` (maybe
        none); None at the end of the stream."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            want_write = bool(self._pending)
            readable, writable, _ = select.select(
                [self.sock], [self.sock] if want_write else [], [], remaining
            )
            if writable:
                self._send_some()
            if readable:
                try:
                    data = self.sock.recv(_CHUNK)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    return None
                if not data:
                    return None
                return self._frames.feed(data)

    def _send_some(self) -> None:
        try:
            sent = self.sock.send(self._pending[:_CHUNK])
        except BlockingIOError:
            return
        except OSError:
            # The sandbox ended or closed its stdin; what it wrote still matters.
            self._pending.clear()
            return
        del self._pending[:sent]
        if not self._pending and not self._writing:
            _shut_write(self.sock)


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
