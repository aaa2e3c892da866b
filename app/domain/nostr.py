"""Nostr rules: NIP-01 events and ids, the kind 38421 listing (RIP-02), discovery selection and relay backoff.

Pure: signing and signature checks live behind the EventSigner and SignatureVerifier ports.
"""

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from app.domain.errors import MalformedEventError

ANNOUNCEMENT_KIND: Final = 38421
REPUBLISH_SECONDS: Final = 24 * 3600
DISCOVERY_LIMIT: Final = 500
# Size limits for events read from relays; anything larger is dropped and counted, never parsed further.
MAX_EVENT_BYTES: Final = 64 * 1024
MAX_CONTENT_CHARS: Final = 16 * 1024
MAX_TAGS: Final = 100
MAX_TAG_ITEMS: Final = 8
MAX_TAG_ITEM_CHARS: Final = 2048
# Relay backoff (SPEC §12): 5 s doubling up to 900 s, +-20 % jitter.
BACKOFF_BASE_SECONDS: Final = 5
BACKOFF_MAX_SECONDS: Final = 900
BACKOFF_JITTER: Final = 0.2

_HEX: Final = frozenset("0123456789abcdef")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})

Tags = tuple[tuple[str, ...], ...]


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and set(text) <= _HEX


def serialize_event(pubkey: str, created_at: int, kind: int, tags: Tags, content: str) -> bytes:
    """The NIP-01 canonical form `[0,pubkey,created_at,kind,tags,content]`: UTF-8 JSON without whitespace,
    non-ASCII characters written as themselves."""
    data = [0, pubkey, created_at, kind, [list(tag) for tag in tags], content]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def compute_event_id(pubkey: str, created_at: int, kind: int, tags: Tags, content: str) -> str:
    """sha256 of the canonical serialization, lowercase hex (NIP-01)."""
    return hashlib.sha256(serialize_event(pubkey, created_at, kind, tags, content)).hexdigest()


@dataclass(frozen=True, slots=True)
class UnsignedEvent:
    pubkey: str
    created_at: int
    kind: int
    tags: Tags
    content: str

    @property
    def id(self) -> str:
        return compute_event_id(self.pubkey, self.created_at, self.kind, self.tags, self.content)

    def signed(self, sig: str) -> "Event":
        return Event(self.id, self.pubkey, self.created_at, self.kind, self.tags, self.content, sig)


@dataclass(frozen=True, slots=True)
class Event:
    """A signed event as carried on the wire. Nothing here proves the signature: see `SignatureVerifier`."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: Tags
    content: str
    sig: str

    @property
    def id_is_valid(self) -> bool:
        """True when `id` is the NIP-01 hash of the other fields."""
        return self.id == compute_event_id(self.pubkey, self.created_at, self.kind, self.tags, self.content)

    def tag_values(self, name: str) -> tuple[str, ...]:
        """The first value of every tag called `name`, in order."""
        return tuple(tag[1] for tag in self.tags if len(tag) > 1 and tag[0] == name)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(tag) for tag in self.tags],
            "content": self.content,
            "sig": self.sig,
        }


def _is_utf8(text: str) -> bool:
    """False for strings with lone surrogates (valid in JSON escapes, not encodable as UTF-8)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _field(obj: Mapping[str, object], name: str) -> object:
    if name not in obj:
        msg = f"event has no {name}"
        raise MalformedEventError(msg)
    return obj[name]


def _tags(value: object) -> Tags:
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        msg = "tags must be a list of at most 100 tags"
        raise MalformedEventError(msg)
    tags: list[tuple[str, ...]] = []
    for tag in value:
        if (
            not isinstance(tag, list)
            or not tag
            or len(tag) > MAX_TAG_ITEMS
            or not all(isinstance(item, str) and len(item) <= MAX_TAG_ITEM_CHARS and _is_utf8(item) for item in tag)
        ):
            msg = "a tag must be a short non-empty list of short strings"
            raise MalformedEventError(msg)
        tags.append(tuple(tag))
    return tuple(tags)


def event_from_json(obj: object) -> Event:
    """Parse an event object as decoded from relay JSON. Raises MalformedEventError on any shape or size problem."""
    if not isinstance(obj, dict):
        msg = "event must be a JSON object"
        raise MalformedEventError(msg)
    event_id, pubkey, sig = _field(obj, "id"), _field(obj, "pubkey"), _field(obj, "sig")
    created_at, kind, content = _field(obj, "created_at"), _field(obj, "kind"), _field(obj, "content")
    if not (isinstance(event_id, str) and _is_hex(event_id, 64) and isinstance(pubkey, str) and _is_hex(pubkey, 64)):
        msg = "id and pubkey must be 64 lowercase hex characters"
        raise MalformedEventError(msg)
    if not (isinstance(sig, str) and _is_hex(sig, 128)):
        msg = "sig must be 128 lowercase hex characters"
        raise MalformedEventError(msg)
    if type(created_at) is not int or type(kind) is not int or not 0 <= created_at < 2**63 or not 0 <= kind <= 65535:  # noqa: PLR2004
        msg = "created_at and kind must be non-negative integers"
        raise MalformedEventError(msg)
    if not isinstance(content, str) or len(content) > MAX_CONTENT_CHARS or not _is_utf8(content):
        msg = "content must be a UTF-8 string of at most 16 KiB"
        raise MalformedEventError(msg)
    return Event(event_id, pubkey, created_at, kind, _tags(_field(obj, "tags")), content, sig)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A NIP-01 filter: the subset this node sends."""

    kinds: tuple[int, ...]
    limit: int
    authors: tuple[str, ...] = ()
    d_tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"kinds": list(self.kinds)}
        if self.authors:
            out["authors"] = list(self.authors)
        if self.d_tags:
            out["#d"] = list(self.d_tags)
        out["limit"] = self.limit
        return out


@dataclass(frozen=True, slots=True)
class QueryResult:
    """What one relay returned: parsed events, and how many messages were dropped as malformed or oversized."""

    events: tuple[Event, ...]
    malformed: int = 0


# -- listing (what this node announces) ------------------------------------------------------------------------------
def is_loopback_url(url: str) -> bool:
    """True for URLs nobody else can reach: localhost names, loopback and unspecified addresses, or no host."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if not host or host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def default_provider_id(pubkey: str) -> str:
    """The `d` tag when PROVIDER_ID is unset: the first 12 hex characters of the public key."""
    return pubkey[:12]


@dataclass(frozen=True, slots=True)
class Listing:
    """The node's announcement before it is dated and signed. `urls` never contains loopback URLs."""

    provider_id: str
    urls: tuple[str, ...]
    mints: tuple[str, ...]
    version: str
    name: str
    about: str

    @classmethod
    def create(
        cls,
        *,
        provider_id: str,
        endpoints: Iterable[str | None],
        mints: Iterable[str],
        version: str,
        name: str,
        about: str,
    ) -> "Listing":
        """Keeps each set, non-loopback endpoint once, in the given order."""
        urls = tuple(dict.fromkeys(u for u in endpoints if u and not is_loopback_url(u)))
        return cls(provider_id, urls, tuple(dict.fromkeys(mints)), version, name, about)

    @property
    def publishable(self) -> bool:
        return bool(self.urls)

    @property
    def tags(self) -> Tags:
        return (
            ("d", self.provider_id),
            *(("u", url) for url in self.urls),
            *(("mint", mint) for mint in self.mints),
            ("version", self.version),
        )

    @property
    def content(self) -> str:
        return json.dumps({"name": self.name, "about": self.about}, separators=(",", ":"), ensure_ascii=False)

    def event(self, pubkey: str, created_at: int) -> UnsignedEvent:
        return UnsignedEvent(pubkey, created_at, ANNOUNCEMENT_KIND, self.tags, self.content)

    def matches(self, event: Event) -> bool:
        """True when `event` carries exactly this listing (same kind, tags in order, content)."""
        return event.kind == ANNOUNCEMENT_KIND and event.tags == self.tags and event.content == self.content


def newest(events: Iterable[Event]) -> Event | None:
    """The replaceable-event winner: highest created_at, then the lowest id (NIP-01)."""
    return min(events, key=lambda e: (-e.created_at, e.id), default=None)


def next_created_at(now: int, previous: Event | None) -> int:
    """A timestamp that replaces `previous` on relays even when the clock lags behind it."""
    return now if previous is None or previous.created_at < now else previous.created_at + 1


def needs_publishing(listing: Listing, current: Event | None, now: int) -> bool:
    """Publish unless the newest copy on the relay is this listing and younger than 24 h."""
    return current is None or not listing.matches(current) or now - current.created_at >= REPUBLISH_SECONDS


def backoff_seconds(failures: int, jitter: float) -> float:
    """Delay after the `failures`-th consecutive failure (>= 1): 5 s doubling to 900 s, scaled by 1 + 0.2*jitter.

    `jitter` is a uniform draw in [-1, 1].
    """
    base = min(BACKOFF_BASE_SECONDS << min(max(failures, 1) - 1, 16), BACKOFF_MAX_SECONDS)
    return base * (1 + BACKOFF_JITTER * max(-1.0, min(1.0, jitter)))


# -- discovery (other nodes' announcements) --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProviderAnnouncement:
    """A verified kind 38421 event, read for display. Its URLs are never contacted by this node."""

    event_id: str
    pubkey: str
    provider_id: str
    created_at: int
    kind: int
    name: str
    about: str | None
    urls: tuple[str, ...]
    mints: tuple[str, ...]
    version: str | None
    content: str

    @property
    def endpoint_url(self) -> str | None:
        return self.urls[0] if self.urls else None


def announcement_from_event(event: Event) -> ProviderAnnouncement:
    """Read an announcement's fields. Raises MalformedEventError without a `d` tag or with non-object content."""
    d_tags = event.tag_values("d")
    if event.kind != ANNOUNCEMENT_KIND or not d_tags:
        msg = "not a kind 38421 event with a d tag"
        raise MalformedEventError(msg)
    try:
        meta = json.loads(event.content) if event.content else {}
    except ValueError:
        msg = "content is not JSON"
        raise MalformedEventError(msg) from None
    if not isinstance(meta, dict):
        msg = "content is not a JSON object"
        raise MalformedEventError(msg)
    name, about = meta.get("name"), meta.get("about")
    versions = event.tag_values("version")
    return ProviderAnnouncement(
        event_id=event.id,
        pubkey=event.pubkey,
        provider_id=d_tags[0],
        created_at=event.created_at,
        kind=event.kind,
        name=name if isinstance(name, str) else "",
        about=about if isinstance(about, str) else None,
        urls=event.tag_values("u"),
        mints=event.tag_values("mint"),
        version=versions[0] if versions else None,
        content=event.content,
    )


def select_providers(announcements: Iterable[ProviderAnnouncement]) -> tuple[ProviderAnnouncement, ...]:
    """Newest per (pubkey, d) (ties: lowest event id), then drop those whose `u` tags are all loopback (or absent);
    newest first."""
    best: dict[tuple[str, str], ProviderAnnouncement] = {}
    for item in announcements:
        key = (item.pubkey, item.provider_id)
        current = best.get(key)
        if current is None or (-item.created_at, item.event_id) < (-current.created_at, current.event_id):
            best[key] = item
    reachable = [a for a in best.values() if any(not is_loopback_url(u) for u in a.urls)]
    return tuple(sorted(reachable, key=lambda a: (-a.created_at, a.event_id)))
