"""Incremental Server-Sent Events framer: byte chunks in, complete events out (SPEC §8.5)."""

from dataclasses import dataclass
from typing import Final

from app.domain.errors import UpstreamError

MAX_EVENT_BYTES: Final = 1024 * 1024


class SseEventTooLargeError(UpstreamError):
    """An upstream event grew past the limit; the stream is aborted rather than buffered without bound."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event. `data` joins multiple `data:` lines with newlines; comments are never kept."""

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: str | None = None

    def encode(self) -> bytes:
        """The event in canonical wire form (LF line ends, one blank line after)."""
        parts: list[str] = []
        if self.event is not None:
            parts.append(f"event: {self.event}\n")
        if self.id is not None:
            parts.append(f"id: {self.id}\n")
        if self.retry is not None:
            parts.append(f"retry: {self.retry}\n")
        if self.data is not None:
            parts.extend(f"data: {line}\n" for line in self.data.split("\n"))
        parts.append("\n")
        return "".join(parts).encode()


def encode_data(data: str, event: str | None = None) -> bytes:
    """A `data:` event (optionally typed) ready to write."""
    return SseEvent(data=data, event=event).encode()


def _parse_block(block: bytes) -> SseEvent | None:
    data: list[str] = []
    event = event_id = retry = None
    for raw_line in block.split(b"\n"):
        if not raw_line or raw_line.startswith(b":"):
            continue
        line = raw_line.decode("utf-8", errors="replace")
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "retry":
            retry = value
    if not data and event is None and event_id is None and retry is None:
        return None  # comment-only or empty block
    return SseEvent(data="\n".join(data) if data else None, event=event, id=event_id, retry=retry)


class SseFramer:
    """Feed raw upstream bytes in any split; get each event once its terminating blank line has arrived.

    CR and CRLF line ends are normalized to LF (a CR at the end of a chunk waits for the next one, so a CRLF
    split across chunks is still one line end). Raises SseEventTooLargeError when one event exceeds
    `max_event_bytes`. Not thread-safe; one framer per stream.
    """

    __slots__ = ("_buffer", "_carry_cr", "_max")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._carry_cr = False
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._carry_cr:
            chunk = b"\r" + chunk
            self._carry_cr = False
        if chunk.endswith(b"\r"):
            self._carry_cr = True
            chunk = chunk[:-1]
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SseEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            block = buffer[start:end]
            if len(block) > self._max:
                raise SseEventTooLargeError(_too_large(self._max))
            start = end + 2
            parsed = _parse_block(block)
            if parsed is not None:
                events.append(parsed)
        self._buffer = buffer[start:] if start else buffer
        if len(self._buffer) > self._max:
            raise SseEventTooLargeError(_too_large(self._max))
        return events

    def finish(self) -> list[SseEvent]:
        """Flush at end of stream: a final event without its blank line is still delivered."""
        rest = self._buffer
        self._buffer = b""
        self._carry_cr = False
        parsed = _parse_block(rest.strip(b"\n")) if rest.strip(b"\n") else None
        return [parsed] if parsed is not None else []


def _too_large(limit: int) -> str:
    return f"Upstream stream event exceeds {limit} bytes"
