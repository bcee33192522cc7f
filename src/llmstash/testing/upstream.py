"""A local OpenAI-compatible server that records every call: the upstream for tests and the demo.

    with MockUpstream(delay=0.5) as upstream:
        llmstash.completion(model="openai/demo", messages=[...], api_base=upstream.base_url)
        assert upstream.call_count("chat/completions") == 1

It serves ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` (and the Azure
paths ``/openai/deployments/<name>/...``) and ``GET /v1/models`` on 127.0.0.1 only. Every answer
gets a fresh id, so a test can tell a cached answer (same id) from a new one. Replies are
deterministic in the prompt; embeddings are unit vectors derived from a hash of the text.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import math
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Delay = float | Callable[[dict[str, Any]], float]


@dataclass
class RecordedCall:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.time)


def _words(value: Any) -> int:
    if isinstance(value, list):
        return sum(_words(item) for item in value)
    if isinstance(value, dict):
        return _words(value.get("content", ""))
    return max(1, len(str(value).split()))


def _last_user_text(messages: Any) -> str:
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def reply_text(prompt: str) -> str:
    """The deterministic reply the mock gives to a prompt."""
    words = prompt.split()
    topic = " ".join(words[:8]) + ("..." if len(words) > 8 else "")
    return f"Here is a careful answer about: {topic}"


def vector_for(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(f"{counter}:{text}".encode("utf-8", "surrogatepass")).digest()
        values.extend((v / 2**31) - 1.0 for v in struct.unpack("<8I", block))
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _first_delta(message: dict[str, Any]) -> dict[str, Any]:
    """The role delta: content "" for a text answer, null for a tool call (as OpenAI sends)."""
    return {"role": "assistant", "content": None if message.get("content") is None else ""}


def stream_chunks(answer: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The chunks a real server would stream for ``answer`` (content cut every 3 characters)."""
    text_mode = answer["object"] == "text_completion"
    head: dict[str, Any] = {k: answer[k] for k in ("id", "created", "model", "system_fingerprint") if k in answer}
    head["object"] = "text_completion" if text_mode else "chat.completion.chunk"
    chunks: list[dict[str, Any]] = []
    for choice in answer["choices"]:
        index = choice["index"]
        if text_mode:
            chunks += [
                {**head, "choices": [{"index": index, "text": t, "finish_reason": None}]} for t in _split(choice["text"], 3)
            ]
            chunks.append({**head, "choices": [{"index": index, "text": "", "finish_reason": choice["finish_reason"]}]})
            continue
        message = choice["message"]
        chunks.append({**head, "choices": [{"index": index, "delta": _first_delta(message), "finish_reason": None}]})
        for piece in _split(message["content"], 3) if message.get("content") else []:
            chunks.append({**head, "choices": [{"index": index, "delta": {"content": piece}, "finish_reason": None}]})
        for position, call in enumerate(message.get("tool_calls") or []):
            first = {
                "index": position,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            chunks.append({**head, "choices": [{"index": index, "delta": {"tool_calls": [first]}, "finish_reason": None}]})
            for piece in _split(call["function"]["arguments"], 5):
                delta = {"tool_calls": [{"index": position, "function": {"arguments": piece}}]}
                chunks.append({**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        chunks.append({**head, "choices": [{"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        chunks.append({**head, "choices": [], "usage": answer["usage"]})
    return chunks


def parse_form(content_type: str, raw: bytes) -> dict[str, Any]:
    """A multipart/form-data body as a dict; the file part is recorded by name, size and SHA-256."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise ValueError("a form part is not bytes")
        if part.get_filename() is not None:
            form[str(name)] = {
                "filename": part.get_filename(),
                "size": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        elif name in form:  # repeated fields (e.g. timestamp_granularities[])
            previous = form[str(name)]
            form[str(name)] = [*(previous if isinstance(previous, list) else [previous]), payload.decode()]
        else:
            form[str(name)] = payload.decode()
    return form


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 128  # bursts of concurrent clients (single-flight tests and benchmarks)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer (an abandoned stream) is normal here, not an error."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class MockUpstream:
    """An OpenAI-compatible server on 127.0.0.1 with a call log, injectable delay and failures.

    Args:
        delay: seconds each answer takes, or a function of the request body giving them.
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` (or ``api-key``)
            get 401.
        embedding_dimensions: vector length when the request does not ask for ``dimensions``.
    """

    def __init__(
        self,
        delay: Delay = 0.0,
        api_key: str | None = None,
        embedding_dimensions: int = 8,
        port: int = 0,
        chunk_delay: float = 0.0,
    ) -> None:
        self.delay = delay
        self.chunk_delay = chunk_delay
        self._stream_cuts: list[int] = []
        self.api_key = api_key
        self.embedding_dimensions = embedding_dimensions
        self.calls: list[RecordedCall] = []
        self._lock = threading.Lock()
        self._failures: list[tuple[int, str]] = []
        self._counter = 0
        self._server = _QuietServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``http://127.0.0.1:<port>/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_base(self) -> str:
        """The endpoint to pass as ``api_base`` for ``azure/<deployment>`` models."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MockUpstream:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="mock-upstream", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call_count(self, path_suffix: str = "") -> int:
        """Calls received whose path ends with ``path_suffix`` (all calls by default)."""
        with self._lock:
            return sum(1 for call in self.calls if call.path.split("?")[0].endswith(path_suffix))

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._failures.clear()

    def cut_next_stream(self, after_chunks: int) -> None:
        """The next streamed answer sends ``after_chunks`` chunks, then drops the connection."""
        with self._lock:
            self._stream_cuts.append(after_chunks)

    def fail_next(self, status: int = 500, times: int = 1, message: str = "injected failure") -> None:
        """Answer the next ``times`` requests with HTTP ``status``."""
        with self._lock:
            self._failures.extend([(status, message)] * times)

    # ----- answering ----------------------------------------------------------------------------

    def _record(self, call: RecordedCall) -> tuple[int, tuple[int, str] | None]:
        with self._lock:
            self.calls.append(call)
            self._counter += 1
            failure = self._failures.pop(0) if self._failures else None
            return self._counter, failure

    def _wait(self, body: dict[str, Any]) -> None:
        seconds = self.delay(body) if callable(self.delay) else self.delay
        if seconds > 0:
            time.sleep(seconds)

    def _take_cut(self) -> int | None:
        with self._lock:
            return self._stream_cuts.pop(0) if self._stream_cuts else None

    def answer(self, path: str, body: dict[str, Any], number: int) -> dict[str, Any]:
        route = path.split("?")[0].rstrip("/")
        model = body.get("model") or route.split("/deployments/")[-1].split("/")[0]
        created = int(time.time())
        if route.endswith("/chat/completions"):
            text = reply_text(_last_user_text(body.get("messages")))
            prompt_tokens = _words(body.get("messages", []))
            completion_tokens = _words(text)
            n = int(body.get("n") or 1)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            finish_reason = "stop"
            if body.get("tools"):  # answer with a call to the first tool
                name = body["tools"][0].get("function", {}).get("name", "tool")
                arguments = json.dumps({"query": _last_user_text(body.get("messages"))})
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": f"call_{number:06d}", "type": "function", "function": {"name": name, "arguments": arguments}}
                    ],
                }
                finish_reason = "tool_calls"
            return {
                "id": f"chatcmpl-{number:06d}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [{"index": i, "message": message, "logprobs": None, "finish_reason": finish_reason} for i in range(n)],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        if route.endswith("/completions"):
            prompt = body.get("prompt", "")
            text = reply_text(prompt if isinstance(prompt, str) else " ".join(map(str, prompt)))
            prompt_tokens = _words(prompt)
            return {
                "id": f"cmpl-{number:06d}",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": _words(text),
                    "total_tokens": prompt_tokens + _words(text),
                },
            }
        if route.endswith("/audio/transcriptions"):
            audio = body.get("file") or {}
            text = f"Transcript of {audio.get('size', 0)} bytes of audio ({str(audio.get('sha256', ''))[:12]})"
            if body.get("language"):
                text += f" in {body['language']}"
            if body.get("response_format") == "verbose_json":
                return {
                    "task": "transcribe",
                    "language": body.get("language", "english"),
                    "duration": 1.0,
                    "text": text,
                    "segments": [],
                }
            return {"text": text}
        if route.endswith("/embeddings"):
            items = body.get("input")
            items = items if isinstance(items, list) else [items]
            dimensions = int(body.get("dimensions") or self.embedding_dimensions)
            return {
                "object": "list",
                "model": model,
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector_for(str(item), dimensions)}
                    for i, item in enumerate(items)
                ],
                "usage": {"prompt_tokens": _words(items), "total_tokens": _words(items)},
            }
        raise LookupError(route)


def _handler_for(upstream: MockUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two writes; don't stall ~40 ms on ACK

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_text(self, text: str) -> None:
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, chunks: list[dict[str, Any]], cut_after: int | None) -> None:
            """Server-sent events in chunked transfer encoding; ``cut_after`` drops the connection."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks] + [b"data: [DONE]\n\n"]
            for number, event in enumerate(events):
                if cut_after is not None and number >= cut_after:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if upstream.chunk_delay:
                    time.sleep(upstream.chunk_delay)
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def _authorized(self) -> bool:
            if upstream.api_key is None:
                return True
            bearer = self.headers.get("Authorization", "")
            return bearer == f"Bearer {upstream.api_key}" or self.headers.get("api-key") == upstream.api_key

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "llmstash"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                content_type = self.headers.get("Content-Type", "")
                body = parse_form(content_type, raw) if content_type.startswith("multipart/") else json.loads(raw) if raw else {}
            except ValueError:
                self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            number, failure = upstream._record(RecordedCall("POST", self.path, headers, body))
            if not self._authorized():
                self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                return
            upstream._wait(body)
            if failure is not None:
                self._send(failure[0], {"error": {"message": failure[1], "type": "server_error"}})
                return
            try:
                answer = upstream.answer(self.path, body, number)
                if (
                    isinstance(answer, dict)
                    and isinstance(answer.get("text"), str)
                    and body.get("response_format") in ("text", "srt", "vtt")
                ):
                    self._send_text(answer["text"])
                elif body.get("stream"):
                    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    self._stream(stream_chunks(answer, include_usage), upstream._take_cut())
                else:
                    self._send(200, answer)
            except LookupError:
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    return Handler
