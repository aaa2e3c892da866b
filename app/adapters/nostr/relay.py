"""A Nostr relay over websockets: publish with an `OK` deadline, query until EOSE or a deadline."""

import asyncio
import json
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from app.domain.errors import MalformedEventError, RelayRejectedError, RelayUnavailableError
from app.domain.nostr import MAX_EVENT_BYTES, Event, EventQuery, QueryResult, event_from_json

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

# A frame above this closes the connection (websockets enforces it); smaller oversized events are counted.
MAX_FRAME_BYTES: Final = 1024 * 1024


class WebsocketRelay:
    """One relay URL; a short-lived connection per call so a dead relay never holds resources."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        ok_timeout: float = 10.0,
        query_timeout: float = 5.0,
    ) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._ok_timeout = ok_timeout
        self._query_timeout = query_timeout

    def __repr__(self) -> str:
        return f"WebsocketRelay({self._url!r})"

    @property
    def url(self) -> str:
        return self._url

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[ClientConnection]:
        tls = ssl.create_default_context() if self._url.startswith("wss://") else None  # verified TLS, always
        try:
            async with asyncio.timeout(self._connect_timeout):
                connection = await connect(
                    self._url, ssl=tls, open_timeout=None, close_timeout=2, max_size=MAX_FRAME_BYTES, compression=None
                )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            msg = f"cannot connect to relay {self._url}: {type(exc).__name__}"
            raise RelayUnavailableError(msg) from None
        try:
            yield connection
        finally:
            await connection.close()

    async def publish(self, event: Event) -> None:
        async with self._connection() as connection:
            try:
                async with asyncio.timeout(self._ok_timeout):
                    await connection.send(json.dumps(["EVENT", event.to_json()], ensure_ascii=False))
                    answer = await _await_ok(connection, event.id)
            except TimeoutError:
                msg = f"relay {self._url} did not confirm the event in time"
                raise RelayUnavailableError(msg) from None
            except ConnectionClosed:
                msg = f"relay {self._url} closed the connection before confirming"
                raise RelayUnavailableError(msg) from None
        if answer is None:
            msg = f"relay {self._url} closed the connection before confirming"
            raise RelayUnavailableError(msg)
        accepted, reason = answer
        # NIP-01 answers a known event `true, "duplicate: …"`; some relays say `false`. It is stored either way.
        if not accepted and not reason.startswith("duplicate:"):
            msg = f"relay {self._url} rejected the event: {reason[:200]}"
            raise RelayRejectedError(msg)

    async def query(self, query: EventQuery) -> QueryResult:
        subscription = secrets.token_hex(8)
        events: list[Event] = []
        malformed = 0
        async with self._connection() as connection:
            try:
                async with asyncio.timeout(self._query_timeout):
                    await connection.send(json.dumps(["REQ", subscription, query.to_json()]))
                    async for message in connection:
                        outcome = _read_query_message(message, subscription)
                        if outcome is _DONE:
                            break
                        if outcome is _MALFORMED:
                            malformed += 1
                        elif isinstance(outcome, Event):
                            events.append(outcome)
                            if len(events) >= query.limit:
                                break
                    await connection.send(json.dumps(["CLOSE", subscription]))
            except TimeoutError:
                log.debug("relay_query_deadline", relay=self._url, events=len(events))
            except ConnectionClosed as exc:
                if any(c is not None and c.code == 1009 for c in (exc.rcvd, exc.sent)):  # noqa: PLR2004 - too big
                    malformed += 1
                log.debug("relay_query_closed", relay=self._url, events=len(events))
        return QueryResult(tuple(events), malformed)


_DONE: Final = object()
_MALFORMED: Final = object()
_IGNORED: Final = object()


def _read_query_message(message: str | bytes, subscription: str) -> object:
    """An Event, or one of the markers: _DONE (EOSE/CLOSED), _MALFORMED, _IGNORED."""
    frame = _frame(message)
    if frame is None:
        return _MALFORMED
    if len(frame) < 2 or frame[1] != subscription:  # noqa: PLR2004
        return _IGNORED  # NOTICE, AUTH or another subscription
    if frame[0] in {"EOSE", "CLOSED"}:
        return _DONE
    if frame[0] != "EVENT" or len(frame) != 3:  # noqa: PLR2004
        return _MALFORMED
    try:
        return event_from_json(frame[2])
    except MalformedEventError:
        return _MALFORMED


def _frame(message: str | bytes) -> list[object] | None:
    """A relay message as a JSON array; None when binary, oversized or not an array."""
    if isinstance(message, bytes) or len(message) > MAX_EVENT_BYTES:
        return None
    try:
        frame = json.loads(message)
    except ValueError:
        return None
    return frame if isinstance(frame, list) and frame else None


async def _await_ok(connection: ClientConnection, event_id: str) -> tuple[bool, str] | None:
    """(accepted, reason) from the relay's OK for `event_id`; None when the connection ends first."""
    async for message in connection:
        if isinstance(message, bytes):
            continue
        try:
            frame = json.loads(message)
        except ValueError:
            continue
        if isinstance(frame, list) and len(frame) >= 3 and frame[0] == "OK" and frame[1] == event_id:  # noqa: PLR2004
            reason = frame[3] if len(frame) > 3 and isinstance(frame[3], str) else ""  # noqa: PLR2004
            return frame[2] is True, reason
    return None
