"""Misbehaving TCP peers on 127.0.0.1, run in threads by the tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Behaviour = Callable[[socket.socket, threading.Event], None]


def silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accept and never say anything."""
    stop.wait()


def drip(conn: socket.socket, stop: threading.Event) -> None:
    """Send one byte (of a plausible TLS record header) every 0.2 s, forever."""
    while not stop.wait(0.2):
        try:
            conn.sendall(b"\x16")
        except OSError:
            return


@contextmanager
def peer(behaviour: Behaviour) -> Iterator[int]:
    """Listen on 127.0.0.1, run ``behaviour`` for each connection; yield the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=behaviour, args=(conn, stop), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        listener.close()
        for c in conns:
            c.close()
        time.sleep(0)
