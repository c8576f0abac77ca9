"""Serve an app from a background thread (tests, notebooks, evaluations against a local server)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


@contextlib.contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 60.0,
                        log_level: str = "warning") -> Iterator[str]:
    """Run `app` with uvicorn on a thread; yields its base URL ("http://host:port"; port 0 = a free one)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="flaxchat-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} did not start within {timeout:.0f}s")
        time.sleep(0.02)
    try:
        name = f"[{host}]" if ":" in host else host
        yield f"http://{name}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
