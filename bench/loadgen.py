"""A small closed-loop HTTP/1.1 load generator: keep-alive connections, one worker each, raw asyncio streams.

It is deliberately lower-level than httpx so the client costs little CPU next to the server being measured:
each worker sends a pre-encoded request, reads the head, then the body (content-length or chunked), and
records latency, time to the first SSE event (streams), status and the billed cost the node reported.
"""

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Final

HEAD_END: Final = b"\r\n\r\n"
_TOTAL_MSATS: Final = re.compile(rb'"total_msats":(\d+)')


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go and what they carry."""

    host: str
    port: int
    path: str
    body: bytes
    authorization: str | None = None

    def encode(self) -> bytes:
        head = [
            f"POST {self.path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            "content-type: application/json",
            "accept: */*",
            f"content-length: {len(self.body)}",
        ]
        if self.authorization:
            head.append(f"authorization: {self.authorization}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


@dataclass(slots=True)
class Sample:
    """One finished request: seconds from write to last byte, to the first SSE event, and the cost seen."""

    latency: float
    ttft: float | None
    status: int
    complete: bool
    cost_msat: int | None


@dataclass(slots=True)
class RunResult:
    samples: list[Sample] = field(default_factory=list)
    transport_errors: int = 0
    elapsed: float = 0.0


class ProtocolError(Exception):
    """The server answered something this client does not understand."""


async def _read_response(reader: asyncio.StreamReader, started: float) -> Sample:
    head = await reader.readuntil(HEAD_END)
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(lines[0][:80].decode("latin-1"))
    status = int(parts[1])
    length: int | None = None
    chunked = False
    cost: int | None = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"x-routstr-cost-msats":
            cost = int(value)
    ttft: float | None = None
    if not chunked:
        body = await reader.readexactly(length or 0)
        return Sample(time.perf_counter() - started, None, status, True, cost)
    tail = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # the empty trailer
            break
        body = await reader.readexactly(size + 2)
        if ttft is None and b"data:" in body:
            ttft = time.perf_counter() - started
        tail = (tail + body[:-2])[-2048:]
    found = _TOTAL_MSATS.findall(tail)
    if found and cost is None:
        cost = int(found[-1])
    return Sample(time.perf_counter() - started, ttft, status, b"[DONE]" in tail, cost)


async def _worker(target: Target, payload: bytes, deadline: float, budget: list[int], result: RunResult) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(target.host, target.port)
                except OSError:
                    result.transport_errors += 1
                    await asyncio.sleep(0.01)
                    continue
            assert reader is not None
            started = time.perf_counter()
            try:
                writer.write(payload)
                sample = await _read_response(reader, started)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError, ValueError):
                result.transport_errors += 1
                writer.close()
                reader = writer = None
                continue
            result.samples.append(sample)
    finally:
        if writer is not None:
            writer.close()


async def run_load(target: Target, *, concurrency: int, seconds: float, max_requests: int) -> RunResult:
    """`concurrency` closed-loop workers until `seconds` pass or `max_requests` were sent."""
    result = RunResult()
    payload = target.encode()
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_worker(target, payload, deadline, budget, result) for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result


@dataclass(slots=True)
class OpenStreams:
    """Streams held open on purpose (the memory probe): each has received its first event."""

    writers: list[asyncio.StreamWriter]
    finishers: list["asyncio.Task[Sample]"]
    failed: int


async def open_streams(target: Target, count: int, first_event_seconds: float) -> OpenStreams:
    """Open `count` connections, send a (slow) streaming request on each, return once each got its first event;
    the rest of every response is read by a task (`finishers`)."""
    payload = target.encode()
    writers: list[asyncio.StreamWriter] = []
    finishers: list[asyncio.Task[Sample]] = []
    first_events: list[asyncio.Future[None]] = []

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: "asyncio.Future[None]") -> Sample:
        started = time.perf_counter()
        writer.write(payload)
        head = await reader.readuntil(HEAD_END)
        status = int(head.split(b" ", 2)[1])
        rest = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data = await reader.readexactly(size + 2)
            if not first.done() and b"data:" in data:
                first.set_result(None)
            rest = (rest + data[:-2])[-2048:]
        found = _TOTAL_MSATS.findall(rest)
        cost = int(found[-1]) if found else None
        return Sample(time.perf_counter() - started, None, status, b"[DONE]" in rest, cost)

    for _ in range(count):
        try:
            reader, writer = await asyncio.open_connection(target.host, target.port)
        except OSError:
            continue
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        writers.append(writer)
        first_events.append(first)
        finishers.append(asyncio.get_running_loop().create_task(one(reader, writer, first)))
    _done, pending = await asyncio.wait(first_events, timeout=first_event_seconds) if first_events else (set(), set())
    return OpenStreams(writers=writers, finishers=finishers, failed=count - len(writers) + len(pending))
