"""A TCP proxy in front of a database server, to take the server away mid-test.

`up` forwards every byte; `refuse` closes the listener and resets every connection (the
server crashed, or its host rebooted); `blackhole` keeps every socket open and forwards
nothing (a hung server, a network that drops packets). Only the tests' own connections
go through it: the real server and every other test stay untouched.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Iterator


class Proxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "up"
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = self._listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()
        self._pump = threading.Thread(target=self._forward, daemon=True)
        self._pump.start()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(0.1)
        return listener

    def _accept(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            if self.mode == "blackhole":
                with self._lock:
                    self._held.append(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))

    def _forward(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pairs = list(self._pairs) if self.mode == "up" else []
            sockets = [s for pair in pairs for s in pair]
            if not sockets:
                self._stop.wait(0.02)
                continue
            try:
                readable, _, _ = select.select(sockets, [], [], 0.05)
            except (OSError, ValueError):
                continue
            for sock in readable:
                pair = next(p for p in pairs if sock in p)
                other = pair[1] if sock is pair[0] else pair[0]
                try:
                    data = sock.recv(65536)
                    if data:
                        other.sendall(data)
                        continue
                except OSError:
                    pass
                self._drop(pair)

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        for sock in pair:
            _reset(sock)

    def refuse(self) -> None:
        """Connections reset, new ones refused."""
        self.mode = "refuse"
        self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
            held, self._held = self._held, []
        for sock in [s for pair in pairs for s in pair] + held:
            _reset(sock)

    def blackhole(self) -> None:
        """Connections open, nothing forwarded either way."""
        self.mode = "blackhole"

    def restore(self) -> None:
        """Up again (on the same port), as a server that came back."""
        if self.mode == "refuse":
            self._listener = self._listen(self.port)
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            _reset(sock)
        self.mode = "up"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self.mode = "refuse"
        with self._lock:
            pairs, self._pairs = self._pairs, []
            held, self._held = self._held, []
        for sock in [s for pair in pairs for s in pair] + held:
            _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Close with RST, as a crashed peer's kernel answers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@contextlib.contextmanager
def proxied(port: int) -> Iterator[Proxy]:
    proxy = Proxy(("127.0.0.1", port))
    try:
        yield proxy
    finally:
        proxy.close()
