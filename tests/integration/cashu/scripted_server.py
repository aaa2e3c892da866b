"""A loopback HTTP/1.1 server whose replies a test scripts per request: JSON, status codes, drops and stalls."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: object = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


@dataclass(frozen=True)
class Drop:
    """Close the connection after reading the request, without a reply."""


@dataclass(frozen=True)
class Stall:
    """Read the request, then never answer (until the client gives up)."""

    seconds: float = 60.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    number: int  # 0 for the first request the server saw


Action = Reply | Drop | Stall
Script = Callable[[Request], Action]


def always(action: Action) -> Script:
    return lambda _request: action


def in_turn(*actions: Action, then: Action) -> Script:
    """The n-th request gets `actions[n]`; every later one gets `then`."""
    return lambda request: actions[request.number] if request.number < len(actions) else then


@dataclass
class ScriptedServer:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return method, path


async def _reply(state: ScriptedServer, writer: asyncio.StreamWriter, action: Reply) -> None:
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        await asyncio.sleep(action.delay)
    finally:
        state.in_flight -= 1
    payload = json.dumps(action.body).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(payload))), *action.headers]
    head = f"HTTP/1.1 {action.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    writer.write(head.encode() + payload)
    await writer.drain()


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[ScriptedServer]:
    state = ScriptedServer()
    handlers: set[asyncio.Task[object]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        try:
            while True:
                method, path = await _read_request(reader)
                request = Request(method, path, len(state.requests))
                state.requests.append(request)
                action = script(request)
                if isinstance(action, Drop):
                    return
                if isinstance(action, Stall):
                    await asyncio.sleep(action.seconds)
                    return
                await _reply(state, writer, action)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()
            if task is not None:
                handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
