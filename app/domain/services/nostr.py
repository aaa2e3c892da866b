"""Nostr use cases: publish this node's listing to a relay, and collect other nodes' listings from all relays."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from app.domain.errors import InvalidRequestError, MalformedEventError, NotFoundError, RelayError
from app.domain.nostr import (
    ANNOUNCEMENT_KIND,
    DISCOVERY_LIMIT,
    REPUBLISH_SECONDS,
    Event,
    EventQuery,
    Listing,
    ProviderAnnouncement,
    announcement_from_event,
    needs_publishing,
    newest,
    next_created_at,
    select_providers,
)
from app.domain.nostr_bech32 import Bech32Error, parse_public_key
from app.domain.ports import Clock, EventSigner, Relay, SignatureVerifier


def is_authentic(event: Event, verifier: SignatureVerifier) -> bool:
    """The id is the NIP-01 hash of the event and the signature is the author's."""
    return event.id_is_valid and verifier.verify(event.pubkey, event.id, event.sig)


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """`published` is False when the relay already held this listing, younger than 24 h.

    `next_due` (Unix s) is when the listing should be checked again: 24 h after the copy the relay now holds.
    """

    event: Event
    published: bool
    next_due: int


class AnnouncementPublisher:
    """Publishes the kind 38421 listing, signed with the node's key, to one relay at a time."""

    def __init__(self, listing: Listing, signer: EventSigner, verifier: SignatureVerifier, clock: Clock) -> None:
        self._listing = listing
        self._signer = signer
        self._verifier = verifier
        self._clock = clock

    @property
    def listing(self) -> Listing:
        return self._listing

    async def publish_to(self, relay: Relay) -> PublishOutcome:
        """Publish unless the relay's newest authentic copy equals the listing and is younger than 24 h.

        Raises RelayError (the caller retries with backoff).
        """
        own = EventQuery(
            kinds=(ANNOUNCEMENT_KIND,),
            authors=(self._signer.public_key,),
            d_tags=(self._listing.provider_id,),
            limit=10,
        )
        stored = await relay.query(own)
        current = newest(
            e
            for e in stored.events
            if e.pubkey == self._signer.public_key
            and self._listing.provider_id in e.tag_values("d")
            and is_authentic(e, self._verifier)
        )
        now = int(self._clock.now().timestamp())
        if current is not None and not needs_publishing(self._listing, current, now):
            return PublishOutcome(current, published=False, next_due=current.created_at + REPUBLISH_SECONDS)
        unsigned = self._listing.event(self._signer.public_key, next_created_at(now, current))
        event = unsigned.signed(self._signer.sign(unsigned.id))
        await relay.publish(event)
        return PublishOutcome(event, published=True, next_due=event.created_at + REPUBLISH_SECONDS)


@dataclass(frozen=True, slots=True)
class DiscoveryReport:
    """Counts from one refresh. `relays_failed` could not be queried; `dropped_*` events were not listed."""

    relays_ok: int
    relays_failed: int
    providers: int
    dropped_malformed: int
    dropped_unverified: int


class DiscoveryService:
    """Other nodes' announcements, refreshed from every relay into a per-instance cache.

    The cache is replaced only when at least one relay answered, so an outage keeps the last good listing.
    Holds state: build one per app and share it between the refresh job and the API.
    """

    def __init__(self, relays: Sequence[Relay], verifier: SignatureVerifier, *, enabled: bool) -> None:
        self._relays = tuple(relays)
        self._verifier = verifier
        self._enabled = enabled
        self._providers: tuple[ProviderAnnouncement, ...] = ()

    @property
    def enabled(self) -> bool:
        return self._enabled

    def providers(self, pubkey: str | None = None) -> tuple[ProviderAnnouncement, ...]:
        """Cached announcements, newest first, optionally of one author (hex or npub).

        Raises NotFoundError when discovery is disabled, InvalidRequestError for a malformed `pubkey`.
        """
        if not self._enabled:
            msg = "Provider discovery is disabled on this node"
            raise NotFoundError(msg)
        if pubkey is None or not pubkey.strip():
            return self._providers
        try:
            wanted = parse_public_key(pubkey)
        except Bech32Error:
            msg = "pubkey must be 64 hex characters or an npub"
            raise InvalidRequestError(msg) from None
        return tuple(p for p in self._providers if p.pubkey == wanted)

    async def refresh(self) -> DiscoveryReport:
        """Query every relay concurrently (`REQ {"kinds":[38421],"limit":500}`), keep authentic events, select.

        Relay failures are counted, never raised.
        """
        query = EventQuery(kinds=(ANNOUNCEMENT_KIND,), limit=DISCOVERY_LIMIT)
        results = await asyncio.gather(*(relay.query(query) for relay in self._relays), return_exceptions=True)
        failed = 0
        malformed = 0
        unverified = 0
        seen: set[str] = set()
        announcements: list[ProviderAnnouncement] = []
        for result in results:
            if isinstance(result, RelayError):
                failed += 1
                continue
            if isinstance(result, BaseException):
                raise result
            malformed += result.malformed
            for event in result.events:
                if event.id in seen:
                    continue
                seen.add(event.id)
                if event.kind != ANNOUNCEMENT_KIND or not is_authentic(event, self._verifier):
                    unverified += 1
                    continue
                try:
                    announcements.append(announcement_from_event(event))
                except MalformedEventError:
                    malformed += 1
        ok = len(self._relays) - failed
        if ok > 0:
            self._providers = select_providers(announcements)
        return DiscoveryReport(ok, failed, len(self._providers), malformed, unverified)
