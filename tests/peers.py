"""Misbehaving TCP peers on 127.0.0.1, run in threads by the tests."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Behaviour = Callable[[socket.socket, threading.Event], None]


def silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accept and never say anything."""
    stop.wait()


def drip(conn: socket.socket, stop: threading.Event) -> None:
    """Send one byte (of a plausible TLS record header) every second, forever."""
    while not stop.wait(1.0):
        try:
            conn.sendall(b"\x16")
        except OSError:
            return


def random_bytes(conn: socket.socket, stop: threading.Event) -> None:
    """Answer the ClientHello with 64 KiB of noise, then wait."""
    try:
        conn.recv(65536)
        conn.sendall(os.urandom(65536))
    except OSError:
        return
    stop.wait()


def reset(conn: socket.socket, stop: threading.Event) -> None:
    """Read the ClientHello, then abort the connection with a TCP RST."""
    try:
        conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        conn.close()


def endless_records(conn: socket.socket, stop: threading.Event) -> None:
    """Stream TLS handshake records (plausible headers, random bodies) until told to stop."""
    try:
        conn.recv(65536)
        while not stop.is_set():
            conn.sendall(b"\x16\x03\x03\x40\x00" + os.urandom(0x4000))
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
