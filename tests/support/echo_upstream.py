"""A real OpenAI-compatible upstream for tests, demo and benchmark: echoes prompts, reports usage, scriptable.

Run standalone with `python -m tests.support.echo_upstream --port 9000`, or in-process:

    with EchoUpstream() as upstream:   # uvicorn on 127.0.0.1, a free port, a background thread
        base_url = upstream.base_url   # "http://127.0.0.1:<port>/v1"

Behaviour is scripted per request by an opaque body field the node forwards untouched,
`"echo": {"status": 503, "omit_usage": true, "delay_ms": 50, "chunks": 20, "break_after": 3, "cached_tokens": 5}`,
or for every request by setting `upstream.script` (same keys) or `upstream.fail_next` (a list of statuses).
Every request is recorded in `upstream.received` (path, headers, body) for the privacy tests.
"""

import argparse
import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MODELS: Final[list[dict[str, Any]]] = [
    {
        "id": "echo/echo-1",
        "name": "Echo 1",
        "context_length": 8192,
        "pricing": {"prompt": "0.000001", "completion": "0.000002", "request": "0", "image": "0"},
        "top_provider": {"context_length": 8192, "max_completion_tokens": 1024, "is_moderated": False},
    },
    {
        "id": "echo/echo-cached",
        "name": "Echo cached",
        "context_length": 8192,
        "pricing": {
            "prompt": "0.000004",
            "completion": "0.000008",
            "request": "0",
            "image": "0",
            "input_cache_read": "0.000001",
        },
        "top_provider": {"context_length": 8192, "max_completion_tokens": 1024, "is_moderated": False},
    },
    {
        "id": "echo/echo-embed",
        "name": "Echo embeddings",
        "context_length": 8192,
        "pricing": {"prompt": "0.0000001", "completion": "0", "request": "0", "image": "0"},
        "top_provider": {"context_length": 8192, "max_completion_tokens": 0, "is_moderated": False},
    },
]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class StreamBrokenError(Exception):
    """Raised inside a response to make the server cut the connection mid-stream."""


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class EchoUpstream:
    """The scriptable upstream. `models` is its OpenRouter-shaped `/v1/models` feed."""

    models: list[dict[str, Any]] = field(default_factory=lambda: [dict(m) for m in DEFAULT_MODELS])
    api_key: str | None = None
    script: dict[str, Any] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    received: list[ReceivedRequest] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    open_streams: int = 0
    completed_streams: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "EchoUpstream":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self, log_level="warning", lifespan="off", access_log=False, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                msg = "echo upstream did not start"
                raise RuntimeError(msg)
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "EchoUpstream":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ASGI ------------------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        self.received.append(ReceivedRequest(scope["method"], path, headers, body))
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            await _json(send, 401, _error("bad upstream key", "invalid_api_key"))
            return
        route = path.removeprefix("/v1")
        if scope["method"] == "GET" and route.rstrip("/") == "/models":
            await _json(send, 200, {"object": "list", "data": self.models})
            return
        if scope["method"] != "POST":
            await _json(send, 404, _error("not found", "not_found"))
            return
        await self._post(route, body, send)

    async def _post(self, route: str, raw: bytes, send: Send) -> None:
        try:
            request: dict[str, Any] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            await _json(send, 400, _error("invalid json", "invalid_json"))
            return
        knobs: dict[str, Any] = {**self.script, **(request.get("echo") or {})}
        status = self.fail_next.pop(0) if self.fail_next else knobs.get("status")
        if knobs.get("first_byte_delay_ms"):
            await asyncio.sleep(knobs["first_byte_delay_ms"] / 1000)
        if status and status != 200:
            extra = [(b"retry-after", b"7")] if status == 429 else []
            await _json(send, int(status), _error(f"scripted {status}", "scripted"), extra)
            return
        handler = {
            "/chat/completions": self._chat,
            "/completions": self._completions,
            "/embeddings": self._embeddings,
            "/responses": self._responses,
            "/messages": self._messages,
        }.get(route, self._other)
        await handler(request, knobs, send)

    async def _chat(self, request: dict[str, Any], knobs: dict[str, Any], send: Send) -> None:
        messages = request.get("messages") or []
        prompt = _last_user_text(messages)
        words = _reply_words(prompt, knobs, request.get("max_tokens") or request.get("max_completion_tokens"))
        usage = _openai_usage(_all_text(messages), words, knobs)
        created = int(time.time())
        model = request.get("model", "")
        if not request.get("stream"):
            body = {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop"}
                ],
            }
            if not knobs.get("omit_usage"):
                body["usage"] = usage
            await _json(send, 200, body)
            return
        stream_id = f"chatcmpl-{uuid.uuid4().hex}"
        include_usage = bool((request.get("stream_options") or {}).get("include_usage")) and not knobs.get("omit_usage")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": stream_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": (" " if i else "") + w}) for i, w in enumerate(words)]
        last = chunk({}, "stop")
        if include_usage and knobs.get("usage_in_content_chunk"):
            last["usage"] = usage
        events.append(last)
        if include_usage and not knobs.get("usage_in_content_chunk"):
            events.append({**chunk({}), "choices": [], "usage": usage})
        await self._stream(send, [msgspec.json.encode(e) for e in events], knobs, done=True)

    async def _completions(self, request: dict[str, Any], knobs: dict[str, Any], send: Send) -> None:
        prompt = request.get("prompt") or ""
        prompt_text = prompt if isinstance(prompt, str) else " ".join(str(p) for p in prompt)
        words = _reply_words(prompt_text, knobs, request.get("max_tokens"))
        usage = _openai_usage(prompt_text, words, knobs)
        created = int(time.time())
        base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": created}
        base["model"] = request.get("model", "")
        if not request.get("stream"):
            body = {**base, "choices": [{"index": 0, "text": " ".join(words), "finish_reason": "stop"}]}
            if not knobs.get("omit_usage"):
                body["usage"] = usage
            await _json(send, 200, body)
            return
        events = [
            {**base, "choices": [{"index": 0, "text": (" " if i else "") + w, "finish_reason": None}]}
            for i, w in enumerate(words)
        ]
        if (request.get("stream_options") or {}).get("include_usage") and not knobs.get("omit_usage"):
            events.append({**base, "choices": [], "usage": usage})
        await self._stream(send, [msgspec.json.encode(e) for e in events], knobs, done=True)

    async def _embeddings(self, request: dict[str, Any], knobs: dict[str, Any], send: Send) -> None:
        raw_input = request.get("input") or ""
        inputs = [raw_input] if isinstance(raw_input, str) else list(raw_input)
        tokens = sum(max(1, len(str(i).split())) for i in inputs)
        body: dict[str, Any] = {
            "object": "list",
            "data": [{"object": "embedding", "index": n, "embedding": [0.0, 0.5, 1.0]} for n in range(len(inputs))],
            "model": request.get("model", ""),
        }
        if not knobs.get("omit_usage"):
            body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        await _json(send, 200, body)

    async def _responses(self, request: dict[str, Any], knobs: dict[str, Any], send: Send) -> None:
        raw_input = request.get("input") or ""
        prompt = raw_input if isinstance(raw_input, str) else _last_user_text(raw_input)
        words = _reply_words(prompt, knobs, request.get("max_output_tokens"))
        text = " ".join(words)
        input_tokens = max(1, len(_all_text(raw_input if isinstance(raw_input, list) else [raw_input]).split()))
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": int(knobs.get("cached_tokens", 0))},
            "output_tokens": len(words),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + len(words),
        }
        response: dict[str, Any] = {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "model": request.get("model", ""),
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{uuid.uuid4().hex}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
        }
        if not knobs.get("omit_usage"):
            response["usage"] = usage
        if not request.get("stream"):
            await _json(send, 200, response)
            return
        in_progress = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[bytes] = [
            _typed("response.created", {"type": "response.created", "response": in_progress}),
            *(
                _typed(
                    "response.output_text.delta",
                    {"type": "response.output_text.delta", "delta": (" " if i else "") + w, "output_index": 0},
                )
                for i, w in enumerate(words)
            ),
            _typed("response.completed", {"type": "response.completed", "response": response}),
        ]
        await self._stream(send, events, knobs, done=False, preformatted=True)

    async def _messages(self, request: dict[str, Any], knobs: dict[str, Any], send: Send) -> None:
        """Anthropic Messages API: additive usage, `message_start` + `message_delta` in streams."""
        messages = request.get("messages") or []
        words = _reply_words(_last_user_text(messages), knobs, request.get("max_tokens"))
        input_tokens = max(1, len(_all_text(messages).split())) + 3
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", ""),
            "content": [{"type": "text", "text": " ".join(words)}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": input_tokens, "output_tokens": len(words)},
        }
        if not request.get("stream"):
            await _json(send, 200, message)
            return
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        events = [
            _typed("message_start", {"type": "message_start", "message": start}),
            _typed(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            *(
                _typed(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": (" " if i else "") + w},
                    },
                )
                for i, w in enumerate(words)
            ),
            _typed("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _typed(
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": len(words)}},
            ),
            _typed("message_stop", {"type": "message_stop"}),
        ]
        await self._stream(send, events, knobs, done=False, preformatted=True)

    async def _other(self, request: dict[str, Any], knobs: dict[str, Any], send: Send) -> None:
        body: dict[str, Any] = {"object": "echo", "received": request}
        if knobs.get("usage"):
            body["usage"] = knobs["usage"]
        await _json(send, 200, body)

    async def _stream(
        self, send: Send, events: list[bytes], knobs: dict[str, Any], *, done: bool, preformatted: bool = False
    ) -> None:
        delay = float(knobs.get("delay_ms", 0)) / 1000
        break_after = knobs.get("break_after")
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        self.open_streams += 1
        try:
            if knobs.get("comments"):
                await send(
                    {"type": "http.response.body", "body": b": OPENROUTER PROCESSING\r\n\r\n", "more_body": True}
                )
            for n, event in enumerate(events):
                if break_after is not None and n >= int(break_after):
                    await send({"type": "http.response.body", "body": b'data: {"partial', "more_body": True})
                    raise StreamBrokenError  # uvicorn drops the connection mid-body
                frame = event if preformatted else b"data: " + event + b"\n\n"
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                if delay:
                    await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n" if done else b"", "more_body": False})
            self.completed_streams += 1
        finally:
            self.open_streams -= 1


def _typed(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(payload) + b"\n\n"


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "upstream_error", "code": code}}


async def _json(send: Send, status: int, body: object, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON + (extra or [])})
    await send({"type": "http.response.body", "body": msgspec.json.encode(body)})


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") != "image_url"
        )
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "user") == "user":
            return _content_text(message.get("content"))
    return ""


def _all_text(messages: list[Any]) -> str:
    return " ".join(_content_text(m.get("content")) if isinstance(m, dict) else str(m) for m in messages)


def _reply_words(prompt: str, knobs: dict[str, Any], max_tokens: object) -> list[str]:
    words = prompt.split() or ["..."]
    if knobs.get("chunks"):
        words = [words[n % len(words)] for n in range(int(knobs["chunks"]))]
    if isinstance(max_tokens, int) and max_tokens > 0:
        words = words[:max_tokens]
    return words


def _openai_usage(prompt_text: str, words: list[str], knobs: dict[str, Any]) -> dict[str, Any]:
    prompt_tokens = max(1, len(prompt_text.split())) + 3
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(words),
        "total_tokens": prompt_tokens + len(words),
    }
    if knobs.get("cached_tokens"):
        usage["prompt_tokens_details"] = {"cached_tokens": min(int(knobs["cached_tokens"]), prompt_tokens)}
    return usage


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible echo upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    app = EchoUpstream(api_key=args.api_key, host=args.host, port=args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
