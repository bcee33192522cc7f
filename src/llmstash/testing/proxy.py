"""The caching proxy on 127.0.0.1, for tests and benchmarks: in this process or in a child process.

with ProxyThread(config) as proxy:               # config: a dict in the YAML file's shape
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-master-key")

with ProxyProcess(config_path, workers=1) as proxy:   # `python -m llmstash serve`, stopped by PID
    ...
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(base: str, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the proxy exited with status {process.returncode} before answering")
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the proxy at {base} did not answer /health within {timeout} s")


class ProxyThread:
    """The proxy app on uvicorn in a thread of this process (its own event loop)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import uvicorn

        from llmstash.proxy.app import create_app
        from llmstash.proxy.config import parse_config

        self.app = create_app(parse_config(config))
        self.proxy = self.app.state.proxy
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on"))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, name="llmstash-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return f"{self.url}/v1"

    def start(self) -> ProxyThread:
        self._thread.start()
        wait_until_healthy(self.url)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProxyProcess:
    """``python -m llmstash serve --config PATH`` in a child process on a free port."""

    def __init__(self, config_path: str | Path, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.command = [
            sys.executable,
            "-m",
            "llmstash",
            "serve",
            "--config",
            str(config_path),
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> ProxyProcess:
        self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until_healthy(self.url, process=self.process)
        except RuntimeError:
            self.stop()
            raise
        return self

    def terminate(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM (a graceful shutdown); the exit status and what the proxy wrote to stderr."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stderr.decode(errors="replace")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.terminate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_apt_updated = False


def ensure_command(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` first if it is missing (tests run
    on clean machines as root; a missing tool must not turn into a skipped test)."""
    import shutil

    global _apt_updated
    found = shutil.which(command)
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
        _apt_updated = True
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env, capture_output=True, timeout=1200)
    found = shutil.which(command)
    if not found:
        raise RuntimeError(f"apt-get installed {package} but {command} is not on PATH")
    return found
