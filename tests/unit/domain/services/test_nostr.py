"""AnnouncementPublisher and DiscoveryService on the relay, key and clock fakes."""

from dataclasses import replace

import pytest

from app.domain.errors import InvalidRequestError, NotFoundError, RelayRejectedError, RelayUnavailableError
from app.domain.nostr import ANNOUNCEMENT_KIND, REPUBLISH_SECONDS, Event, Listing
from app.domain.nostr_bech32 import npub_encode
from app.domain.services.nostr import AnnouncementPublisher, DiscoveryService
from tests.fakes.clock import FixedClock
from tests.fakes.nostr_keys import FakeEventSigner, FakeSignatureVerifier
from tests.fakes.relay import FakeRelay

LISTING = Listing.create(
    provider_id="node-1",
    endpoints=("https://node.example",),
    mints=("https://mint.a",),
    version="0.1.0",
    name="Node",
    about="About",
)


def _publisher(clock: FixedClock, signer: FakeEventSigner | None = None) -> AnnouncementPublisher:
    return AnnouncementPublisher(LISTING, signer or FakeEventSigner(), FakeSignatureVerifier(), clock)


def _signed(signer: FakeEventSigner, listing: Listing, created_at: int) -> Event:
    unsigned = listing.event(signer.public_key, created_at)
    return unsigned.signed(signer.sign(unsigned.id))


def _now(clock: FixedClock) -> int:
    return int(clock.current.timestamp())


# -- publishing ------------------------------------------------------------------------------------------------------
async def test_publish_to_sends_signed_listing_when_relay_has_none() -> None:
    clock, relay, signer = FixedClock(), FakeRelay(), FakeEventSigner()

    outcome = await _publisher(clock, signer).publish_to(relay)

    assert outcome.published
    assert relay.published == [outcome.event]
    event = outcome.event
    assert (event.kind, event.tags, event.content, event.pubkey) == (38421, LISTING.tags, LISTING.content, "ab" * 32)
    assert event.created_at == _now(clock)
    assert event.id_is_valid
    assert FakeSignatureVerifier().verify(event.pubkey, event.id, event.sig)
    assert outcome.next_due == event.created_at + REPUBLISH_SECONDS


async def test_publish_to_skips_when_relay_copy_is_equal_and_fresh() -> None:
    clock, relay, signer = FixedClock(), FakeRelay(), FakeEventSigner()
    existing = _signed(signer, LISTING, _now(clock) - 3600)
    relay.store(existing)

    outcome = await _publisher(clock, signer).publish_to(relay)

    assert not outcome.published
    assert relay.published == []
    assert outcome.event == existing
    assert outcome.next_due == existing.created_at + REPUBLISH_SECONDS


async def test_publish_to_republishes_when_relay_copy_is_24h_old() -> None:
    clock, relay, signer = FixedClock(), FakeRelay(), FakeEventSigner()
    relay.store(_signed(signer, LISTING, _now(clock) - REPUBLISH_SECONDS))

    outcome = await _publisher(clock, signer).publish_to(relay)

    assert outcome.published
    assert relay.stored == [outcome.event]


async def test_publish_to_replaces_relay_copy_when_listing_changed() -> None:
    clock, relay, signer = FixedClock(), FakeRelay(), FakeEventSigner()
    relay.store(_signed(signer, replace(LISTING, name="Old name"), _now(clock) - 60))

    outcome = await _publisher(clock, signer).publish_to(relay)

    assert outcome.published
    assert relay.stored == [outcome.event]
    assert outcome.event.content == LISTING.content


async def test_publish_to_dates_event_after_relay_copy_when_clock_lags() -> None:
    clock, relay, signer = FixedClock(), FakeRelay(), FakeEventSigner()
    relay.store(_signed(signer, replace(LISTING, name="Old name"), _now(clock) + 30))

    outcome = await _publisher(clock, signer).publish_to(relay)

    assert outcome.event.created_at == _now(clock) + 31
    assert relay.stored == [outcome.event]


async def test_publish_to_ignores_forged_copy_of_own_listing() -> None:
    clock, relay, signer = FixedClock(), FakeRelay(), FakeEventSigner()
    relay.store(replace(_signed(signer, LISTING, _now(clock) - 60), sig="00" * 64))

    outcome = await _publisher(clock, signer).publish_to(relay)

    assert outcome.published


async def test_publish_to_queries_only_own_listing() -> None:
    clock, relay, signer = FixedClock(), FakeRelay(), FakeEventSigner()

    await _publisher(clock, signer).publish_to(relay)

    assert relay.queries[0].authors == (signer.public_key,)
    assert relay.queries[0].d_tags == ("node-1",)
    assert relay.queries[0].kinds == (ANNOUNCEMENT_KIND,)


async def test_publish_to_raises_when_relay_is_unavailable() -> None:
    relay = FakeRelay()
    relay.unavailable = True

    with pytest.raises(RelayUnavailableError):
        await _publisher(FixedClock()).publish_to(relay)


async def test_publish_to_raises_when_relay_rejects_event() -> None:
    relay = FakeRelay()
    relay.reject_next = 1

    with pytest.raises(RelayRejectedError):
        await _publisher(FixedClock()).publish_to(relay)

    assert relay.stored == []


# -- discovery -------------------------------------------------------------------------------------------------------
def _other_listing(name: str, url: str = "https://other.example") -> Listing:
    return Listing.create(provider_id="x", endpoints=(url,), mints=("https://m",), version="1", name=name, about="")


async def test_refresh_lists_verified_announcements_from_every_relay() -> None:
    alice, bob = FakeEventSigner("a1" * 32), FakeEventSigner("b2" * 32)
    relay_1, relay_2 = FakeRelay("wss://one"), FakeRelay("wss://two")
    relay_1.store(_signed(alice, _other_listing("Alice"), 100))
    relay_2.store(_signed(bob, _other_listing("Bob"), 200))
    discovery = DiscoveryService([relay_1, relay_2], FakeSignatureVerifier(), enabled=True)

    report = await discovery.refresh()

    assert [p.name for p in discovery.providers()] == ["Bob", "Alice"]
    assert (report.relays_ok, report.relays_failed, report.providers) == (2, 0, 2)
    assert relay_1.queries[0].to_json() == {"kinds": [38421], "limit": 500}


async def test_refresh_drops_event_when_signature_is_forged() -> None:
    alice = FakeEventSigner("a1" * 32)
    relay = FakeRelay()
    genuine = _signed(alice, _other_listing("Alice"), 100)
    forged = replace(_signed(alice, _other_listing("Mallory", "https://evil.example"), 200), sig="00" * 64)
    relay.store(genuine)
    relay.stored.append(forged)  # a permissive relay keeps both
    discovery = DiscoveryService([relay], FakeSignatureVerifier(), enabled=True)

    report = await discovery.refresh()

    assert [p.name for p in discovery.providers()] == ["Alice"]
    assert report.dropped_unverified == 1


async def test_refresh_drops_event_when_id_does_not_match_content() -> None:
    alice = FakeEventSigner("a1" * 32)
    relay = FakeRelay()
    relay.store(replace(_signed(alice, _other_listing("Alice"), 100), content='{"name":"Tampered"}'))
    discovery = DiscoveryService([relay], FakeSignatureVerifier(), enabled=True)

    report = await discovery.refresh()

    assert discovery.providers() == ()
    assert report.dropped_unverified == 1


async def test_refresh_counts_malformed_events_without_failing() -> None:
    alice = FakeEventSigner("a1" * 32)
    relay = FakeRelay()
    relay.malformed = 3
    unsigned = replace(_other_listing("x").event(alice.public_key, 100), content="not json")
    relay.store(unsigned.signed(alice.sign(unsigned.id)))
    discovery = DiscoveryService([relay], FakeSignatureVerifier(), enabled=True)

    report = await discovery.refresh()

    assert report.dropped_malformed == 4
    assert discovery.providers() == ()


async def test_refresh_keeps_previous_cache_when_every_relay_fails() -> None:
    relay = FakeRelay()
    relay.store(_signed(FakeEventSigner("a1" * 32), _other_listing("Alice"), 100))
    discovery = DiscoveryService([relay], FakeSignatureVerifier(), enabled=True)
    await discovery.refresh()
    relay.unavailable = True

    report = await discovery.refresh()

    assert (report.relays_ok, report.relays_failed) == (0, 1)
    assert [p.name for p in discovery.providers()] == ["Alice"]


async def test_refresh_uses_answering_relays_when_one_fails() -> None:
    down, up = FakeRelay("wss://down"), FakeRelay("wss://up")
    down.unavailable = True
    up.store(_signed(FakeEventSigner("a1" * 32), _other_listing("Alice"), 100))
    discovery = DiscoveryService([down, up], FakeSignatureVerifier(), enabled=True)

    report = await discovery.refresh()

    assert (report.relays_ok, report.relays_failed) == (1, 1)
    assert [p.name for p in discovery.providers()] == ["Alice"]


async def test_providers_filters_by_pubkey_hex_or_npub() -> None:
    alice, bob = FakeEventSigner("a1" * 32), FakeEventSigner("b2" * 32)
    relay = FakeRelay()
    relay.store(_signed(alice, _other_listing("Alice"), 100))
    relay.store(_signed(bob, _other_listing("Bob"), 200))
    discovery = DiscoveryService([relay], FakeSignatureVerifier(), enabled=True)
    await discovery.refresh()

    by_hex = discovery.providers(alice.public_key.upper())
    by_npub = discovery.providers(npub_encode(bob.public_key))

    assert [p.name for p in by_hex] == ["Alice"]
    assert [p.name for p in by_npub] == ["Bob"]


def test_providers_raises_invalid_request_when_pubkey_is_malformed() -> None:
    discovery = DiscoveryService([], FakeSignatureVerifier(), enabled=True)

    with pytest.raises(InvalidRequestError):
        discovery.providers("npub1nope")


def test_providers_raises_not_found_when_discovery_is_disabled() -> None:
    discovery = DiscoveryService([], FakeSignatureVerifier(), enabled=False)

    with pytest.raises(NotFoundError):
        discovery.providers()
