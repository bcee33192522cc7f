"""LiteLLM beside llmstash: the harness's end of bench/litellm_runner.py.

LiteLLM lives in a venv of its own (``.venv-litellm``, made by ``make bench``), so its side of a
workload runs in a child process: ``Twin`` starts the runner with ``--interleave``, waits while it
imports LiteLLM and warms up, then asks it for one block at a time (``twin.block()``) between the
llmstash blocks, so that both libraries are measured alternately, on the same machine state. The
two never run at once: while one times its calls the other waits on a pipe.

Nothing here may crash the harness: when LiteLLM is not there (``configure`` found no venv, or it
does not import) every ``Twin`` is inert and its result is "n/a"; when the runner fails or a check
fails, the twin records the error (shown as ERROR in the table, with the reason in the notes) and
stops asking for blocks, while the llmstash side goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import BenchError, TwinResult

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().with_name("litellm_runner.py")
DEFAULT_PYTHON = ROOT / ".venv-litellm" / "bin" / "python"
CHILD_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # else `import litellm` fetches its cost map over the network
READY_TIMEOUT = 300.0  # import + warm-up (the import workload warms up with fresh processes of ~3 s each)
BLOCK_TIMEOUT = 300.0


class _Config:
    python: Path | None = None
    version: str | None = None
    reason = "not configured"


CONFIG = _Config()


def configure(python: Path | None) -> str:
    """Check that ``python`` runs LiteLLM (``None``: LiteLLM disabled); return the report's line about it."""
    CONFIG.python, CONFIG.version = None, None
    if python is None:
        CONFIG.reason = "disabled (--no-litellm)"
    elif not python.exists():
        CONFIG.reason = f"`{_display(python)}` not found (`make bench` creates it; `make bench-litellm-venv` recreates it)"
    else:
        try:
            with Twin("probe", _python=python) as probe:
                ready = probe.ready
                probe.finish()
            if ready is None:
                raise BenchError(probe.error or "no answer")
            CONFIG.python, CONFIG.version = python, str(ready["version"])
        except Exception as exc:
            CONFIG.reason = f"LiteLLM does not run from `{_display(python)}`: {exc}"
    if CONFIG.python is None:
        return f"LiteLLM: n/a, {CONFIG.reason}"
    return f"LiteLLM: {CONFIG.version} (its own venv, `{_display(CONFIG.python.parent.parent)}`, run with LITELLM_LOCAL_MODEL_COST_MAP=True)"


def available() -> bool:
    return CONFIG.python is not None


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def spread(n: int, k: int) -> set[int]:
    """The indices among ``range(n)`` after which to run ``k`` twin blocks, evenly spread (k <= n)."""
    return {i for i in range(n) if (i + 1) * k // n > i * k // n}


class Twin:
    """One LiteLLM runner process for one workload; ``Twin(None)`` is inert (a workload without a twin).

    Use as a context manager. ``ready`` is the runner's ready message (None if it failed or is not
    running), ``block()`` returns one block's data (None once anything failed), ``finish()`` the final
    checks' data, and ``failure`` the TwinResult to report when something went wrong.
    """

    def __init__(self, workload: str | None, _python: Path | None = None, **params: Any) -> None:
        self.workload = workload
        self.params = params
        self.python = _python or CONFIG.python
        self.process: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] | None = None
        self.failure: TwinResult | None = None
        self.error = ""
        """What went wrong, in short (the failure's notes add the runner's last stderr lines)."""
        self.blocks = 0
        self.idle_cpu_ns = 0
        """CPU the runner used while waiting for its turn (while llmstash was being timed)."""
        self._buffer = b""
        self._stderr: Any = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def active(self) -> bool:
        return self.process is not None and self.failure is None

    def __enter__(self) -> Twin:
        if self.workload is None:
            return self
        if self.python is None:
            self.failure = TwinResult("n/a", notes=f"LiteLLM not measured: {CONFIG.reason}")
            return self
        args = [str(self.python), str(RUNNER), self.workload, "--interleave"]
        for key, value in self.params.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value not in (None, False):
                args += [flag, str(value)]
        self._stderr = tempfile.TemporaryFile()
        self._workdir = tempfile.TemporaryDirectory(prefix="litellm-bench-")  # no project .env for LiteLLM to load
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=self._workdir.name,
            env=os.environ | CHILD_ENV,
            bufsize=0,
        )
        self.ready = self._expect("ready", READY_TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            try:
                process.stdin.close()  # type: ignore[union-attr]
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        if self._stderr is not None:
            self._stderr.close()
        if self._workdir is not None:
            self._workdir.cleanup()

    def block(self) -> dict[str, Any] | None:
        """One timed block in the runner, or None (no twin, or it failed)."""
        if not self.active:
            return None
        self._send("block")
        answer = self._expect("block", BLOCK_TIMEOUT)
        if answer is not None:
            self.blocks += 1
        return answer

    def finish(self) -> dict[str, Any] | None:
        if not self.active:
            return None
        self._send("finish")
        return self._expect("result", BLOCK_TIMEOUT)

    def fail(self, message: str) -> None:
        """Record a failed check of the harness's own (e.g. the upstream's call count)."""
        if self.failure is None:
            self._fail(message)

    def outcome(self, compute: Callable[[], TwinResult]) -> TwinResult | None:
        """The workload's LiteLLM result: the failure if any, else ``compute()`` (whose BenchError is one)."""
        if self.workload is None:
            return None
        if self.failure is None:
            try:
                result = compute()
            except BenchError as exc:
                self._fail(str(exc))
            else:
                idle = f"; LiteLLM's process used {self.idle_cpu_ns / 1e6:,.1f} ms of CPU in all while llmstash's side ran"
                return dataclasses.replace(result, notes=result.notes + idle)
        return self.failure

    # ----- the pipe ----------------------------------------------------------------------------

    def _send(self, command: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(command.encode() + b"\n")
            self.process.stdin.flush()
        except OSError as exc:
            self._fail(f"the runner stopped listening ({exc})")

    def _expect(self, event: str, timeout: float) -> dict[str, Any] | None:
        if not self.active:
            return None
        try:
            message = self._read(timeout)
        except BenchError as exc:
            self._fail(str(exc))
            return None
        if message.get("event") == "error":
            self._fail(str(message.get("message")))
            return None
        if message.get("event") != event:
            self._fail(f"expected {event!r} from the runner, got {message!r:.200}")
            return None
        self.idle_cpu_ns += int(message.get("idle_cpu_ns", 0))
        return message

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"no answer from the runner in {timeout:g} s")
                if not selector.select(left):
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    status = self.process.wait()
                    raise BenchError(f"the runner exited with status {status}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise BenchError(f"the runner wrote something that is not JSON: {line[:200]!r}") from None
        if not isinstance(message, dict):
            raise BenchError(f"the runner wrote {line[:200]!r}")
        return message

    def _fail(self, message: str) -> None:
        self.error = message
        tail = self._stderr_tail()
        self.failure = TwinResult(
            "error", notes=f"LiteLLM run FAILED: {message}" + (f" (runner's stderr: {tail})" if tail else "")
        )
        print(f"  LiteLLM twin of {self.workload} FAILED: {message}", file=sys.stderr, flush=True)
        if tail:
            print(f"  runner's stderr ends: {tail}", file=sys.stderr, flush=True)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _stderr_tail(self, lines: int = 3) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        return " / ".join(kept[-lines:])[-600:]
