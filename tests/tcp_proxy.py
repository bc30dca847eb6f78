"""A TCP proxy on 127.0.0.1 in front of a real server, to test outages it cannot stage:
connections passed through, held (accepted, never answered: a hung server), or the next
few answered by the proxy itself (dropped after the request, or a bare 503)."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

Action = Literal["pass", "hold", "drop", "503"]
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class TcpProxy:
    """Proxies to `target` (http://host:port); `mode` applies to new connections, after the
    ones `intercept` singled out."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.mode: Action = "pass"
        self.intercepted = 0
        self._queue: list[Action] = []
        self._held: list[socket.socket] = []
        self._piped: list[socket.socket] = []
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def intercept(self, action: Action, times: int = 1) -> None:
        """Treat the next `times` connections with `action`, then go back to `mode`."""
        with self._lock:
            self._queue += [action] * times

    def hold(self) -> None:
        """From now on the server hangs: open connections are cut (a client's pool would
        reuse them), new ones accepted and never answered."""
        with self._lock:
            self.mode = "hold"
            self._cut(self._piped)

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            self._cut(self._held + self._piped)

    @staticmethod
    def _cut(connections: list[socket.socket]) -> None:
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        connections.clear()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                action = self._queue.pop(0) if self._queue else self.mode
                self.intercepted += action in ("drop", "503")
            if action == "pass":
                upstream = socket.create_connection(self.target)
                with self._lock:
                    self._piped += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()
            elif action == "hold":
                with self._lock:
                    self._held.append(client)
            else:
                threading.Thread(target=_answer, args=(client, action), daemon=True).start()


def _answer(client: socket.socket, action: Action) -> None:
    client.settimeout(2)
    with contextlib.suppress(OSError):
        if action == "503":
            client.recv(65536)  # the request's head is enough to answer it
            client.sendall(_BUSY)
        else:
            while client.recv(65536):  # swallow the request, body included, then hang up
                pass
    client.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
