"""Private redis-server processes for the tests that restart a server, fill its memory or
change its configuration: never the shared service. Each has its own port and folder."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOW_TO_INSTALL = (
    "these tests start private redis-server processes: install Redis 7 (`apt-get install "
    "redis-server`) or set PROJECTIONIST_REDIS_SERVER to the redis-server binary"
)


def redis_server_binary() -> str:
    found = os.environ.get("PROJECTIONIST_REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        pytest.fail(HOW_TO_INSTALL)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """One redis-server on 127.0.0.1:<free port>, data in ``folder``; restartable."""

    def __init__(self, folder: Path, *args: str, tls: dict[str, Path] | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = args
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            listen += ["--tls-cert-file", str(self.tls["cert"]), "--tls-key-file"]
            listen += [str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"])]
        else:
            listen = ["--port", str(self.port)]
        return [
            redis_server_binary(),
            *listen,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--logfile",
            str(self.folder / "redis.log"),
            *self.args,
        ]

    def start(self, timeout: float = 15.0) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.admin()
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.AuthenticationError:
                    return  # it answers: it wants a password
                except (redis.ConnectionError, redis.ResponseError):
                    pass
                if self.process is not None and self.process.poll() is not None:
                    log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"redis-server exited with {self.process.returncode}: {log}")
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server on port {self.port} not ready in {timeout}s")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to clients."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def admin(self) -> redis.Redis:
        """A synchronous client for the test's own commands (CONFIG SET, INFO, CLIENT PAUSE)."""
        once = Retry(NoBackoff(), 0)
        if self.tls:
            return redis.Redis(
                host="127.0.0.1",
                port=self.port,
                socket_timeout=10,
                retry=once,
                ssl=True,
                ssl_ca_certs=str(self.tls["ca"]),
            )
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10, retry=once)

    def run_id(self) -> str:
        client = self.admin()
        try:
            return str(client.info("server")["run_id"])
        finally:
            client.close()
