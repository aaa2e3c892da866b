"""Relay fake: an in-memory relay with NIP-01 filters and addressable-event replacement, plus failure knobs."""

from app.domain.errors import RelayRejectedError, RelayUnavailableError
from app.domain.nostr import Event, EventQuery, QueryResult


def _matches(event: Event, query: EventQuery) -> bool:
    return (
        event.kind in query.kinds
        and (not query.authors or event.pubkey in query.authors)
        and (not query.d_tags or any(d in query.d_tags for d in event.tag_values("d")))
    )


class FakeRelay:
    """Stores what is published (or `stored` directly, unverified, like a permissive relay).

    Knobs: `unavailable` (every call fails), `fail_next` (that many calls fail), `reject_next` (that many publishes
    are answered `OK false`), `malformed` (added to every query result). Calls are recorded in `published`/`queries`.
    """

    def __init__(self, url: str = "wss://fake.relay") -> None:
        self._url = url
        self.stored: list[Event] = []
        self.published: list[Event] = []
        self.queries: list[EventQuery] = []
        self.unavailable = False
        self.fail_next = 0
        self.reject_next = 0
        self.malformed = 0

    @property
    def url(self) -> str:
        return self._url

    def _maybe_fail(self) -> None:
        if self.unavailable:
            msg = f"cannot connect to relay {self._url}"
            raise RelayUnavailableError(msg)
        if self.fail_next > 0:
            self.fail_next -= 1
            msg = f"relay {self._url} did not answer in time"
            raise RelayUnavailableError(msg)

    async def publish(self, event: Event) -> None:
        self._maybe_fail()
        if self.reject_next > 0:
            self.reject_next -= 1
            msg = f"relay {self._url} rejected the event: blocked"
            raise RelayRejectedError(msg)
        self.published.append(event)
        self.store(event)

    def store(self, event: Event) -> None:
        """Keep `event`, replacing an older addressable event of the same (kind, pubkey, d) like a real relay."""
        if 30000 <= event.kind < 40000:  # addressable range (NIP-01)
            key = (event.kind, event.pubkey, event.tag_values("d")[:1])
            same = [e for e in self.stored if (e.kind, e.pubkey, e.tag_values("d")[:1]) == key]
            if any(e.created_at > event.created_at for e in same):
                return
            self.stored = [e for e in self.stored if e not in same]
        self.stored.append(event)

    async def query(self, query: EventQuery) -> QueryResult:
        self._maybe_fail()
        self.queries.append(query)
        found = sorted((e for e in self.stored if _matches(e, query)), key=lambda e: -e.created_at)
        return QueryResult(tuple(found[: query.limit]), self.malformed)
