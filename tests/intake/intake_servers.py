"""Serving an ASGI app on a loopback port for the intake tests (a module of its own, not conftest:
`from conftest import ...` would name whichever test package's conftest was imported last)."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(app, sock: socket.socket):
    """Run ``app`` under uvicorn in a thread on ``sock`` until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
