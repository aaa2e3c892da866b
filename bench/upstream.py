"""A lean OpenAI-compatible upstream for the benchmark: raw asyncio HTTP/1.1 keep-alive, uvloop, tiny fixed replies.

It serves what the node needs and nothing else, so the "direct" baseline measures the upstream and not a framework:

- `GET /v1/models`: one priced model (OpenRouter shape), `bench/echo-1`;
- `POST /v1/chat/completions`: a fixed reply with `usage`; with `"stream": true` an SSE stream (chunked) of
  eight content chunks, a finish chunk, a usage chunk when `stream_options.include_usage`, and `[DONE]`.

Slow streams for the memory probe: a body field `"bench": {"hold_ms": 20000}` sends the first chunk, then waits
`hold_ms` (or until `GET /bench/release`) before the rest. Run it as `python -m bench.upstream --port 9100`.
"""

import argparse
import asyncio
import contextlib
import time
from typing import Any, Final

import msgspec

MODEL_ID: Final = "bench/echo-1"
MODELS: Final = {
    "object": "list",
    "data": [
        {
            "id": MODEL_ID,
            "name": "Bench echo 1",
            "context_length": 8192,
            "pricing": {"prompt": "0.000001", "completion": "0.000002", "request": "0", "image": "0"},
            "top_provider": {"context_length": 8192, "max_completion_tokens": 1024, "is_moderated": False},
        }
    ],
}
WORDS: Final = ("Hello", " from", " the", " bench", " upstream", ".", " Tokens", " arrive")
USAGE: Final = {"prompt_tokens": 12, "completion_tokens": len(WORDS), "total_tokens": 12 + len(WORDS)}
MAX_HEAD: Final = 64 * 1024


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: ".encode()
        + content_type
        + f"\r\ncontent-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n".encode()
    )
    return head + body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


MODELS_RESPONSE: Final = _response("200 OK", b"application/json", msgspec.json.encode(MODELS))
NOT_FOUND: Final = _response("404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')
BAD_JSON: Final = _response("400 Bad Request", b"application/json", b'{"error":{"message":"invalid json"}}')
STREAM_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
)


def completion_body(model: str) -> bytes:
    return msgspec.json.encode(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}, "finish_reason": "stop"}
            ],
            "usage": USAGE,
        }
    )


def stream_events(model: str, include_usage: bool) -> list[bytes]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events = [_sse(chunk({"role": "assistant", "content": ""}))]
    events += [_sse(chunk({"content": word})) for word in WORDS]
    events.append(_sse(chunk({}, "stop")))
    if include_usage:
        events.append(_sse({**chunk({}), "choices": [], "usage": USAGE}))
    events.append(b"data: [DONE]\n\n")
    return events


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection: parse request heads and bodies, answer in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP server hands out write transports

    def connection_lost(self, _exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._drain()

    def _drain(self) -> None:
        while self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    self._transport.close()
                return
            head = bytes(self._buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            if not self._answer(method, path, body):
                return  # a slow stream owns the connection until it ends

    def _answer(self, method: str, path: str, body: bytes) -> bool:
        """Write the response; False when a task writes it later (the next request waits for it)."""
        transport = self._transport
        assert transport is not None
        route = path.split("?", 1)[0].removeprefix("/v1")
        if method == "GET":
            transport.write(_get(route))
            return True
        if method != "POST" or route != "/chat/completions":
            transport.write(NOT_FOUND)
            return True
        try:
            request = msgspec.json.decode(body)
        except msgspec.DecodeError:
            transport.write(BAD_JSON)
            return True
        model = str(request.get("model", ""))
        if not request.get("stream"):
            transport.write(_response("200 OK", b"application/json", completion_body(model)))
            return True
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        events = stream_events(model, include_usage)
        hold_ms = float((request.get("bench") or {}).get("hold_ms", 0))
        if not hold_ms:
            transport.write(STREAM_HEAD + b"".join(_chunk(e) for e in events) + b"0\r\n\r\n")
            return True
        self._busy = True
        task = asyncio.get_running_loop().create_task(self._slow_stream(events, hold_ms / 1000))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return False

    async def _slow_stream(self, events: list[bytes], hold: float) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(STREAM_HEAD + _chunk(events[0]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_RELEASE[0].wait(), hold)
        if self._transport is None:
            return
        transport.write(b"".join(_chunk(e) for e in events[1:]) + b"0\r\n\r\n")
        self._busy = False
        self._drain()


def _get(route: str) -> bytes:
    if route.rstrip("/") == "/models":
        return MODELS_RESPONSE
    if route == "/bench/release":
        _release_held_streams()
        return _response("200 OK", b"application/json", b"{}")
    return NOT_FOUND


_TASKS: set[asyncio.Task[None]] = set()
_RELEASE: list[asyncio.Event] = []  # the current gate of held slow streams


def _release_held_streams() -> None:
    """Let every held slow stream finish now; later ones wait on a fresh gate."""
    _RELEASE[0].set()
    _RELEASE[0] = asyncio.Event()


async def serve(host: str, port: int) -> None:
    _RELEASE[:] = [asyncio.Event()]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="lean OpenAI-compatible upstream for the benchmark")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop  # noqa: PLC0415 - optional speed-up, installed with uvicorn[standard]
        except ImportError:  # pragma: no cover - plain asyncio works too
            asyncio.run(serve(args.host, args.port))
        else:
            uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
