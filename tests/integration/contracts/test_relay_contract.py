"""Relay contract: FakeRelay and WebsocketRelay (against a real loopback relay) behave alike."""

import secrets
import time
from collections.abc import Iterator

import pytest

from app.adapters.nostr import SecpEventSigner, WebsocketRelay
from app.domain.errors import RelayUnavailableError
from app.domain.nostr import ANNOUNCEMENT_KIND, Event, EventQuery, Listing
from app.domain.ports import Relay
from tests.fakes.relay import FakeRelay
from tests.support.backends import free_port
from tests.support.relay import running_relay


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_relay(tmp_path_factory.mktemp("relay")) as url:
        yield url


@pytest.fixture(params=["fake", "websocket"])
def relay(request: pytest.FixtureRequest) -> Relay:
    if request.param == "fake":
        return FakeRelay()
    return WebsocketRelay(request.getfixturevalue("relay_url"))


@pytest.fixture(params=["fake", "websocket"])
def dead_relay(request: pytest.FixtureRequest) -> Relay:
    if request.param == "fake":
        fake = FakeRelay()
        fake.unavailable = True
        return fake
    return WebsocketRelay(f"ws://127.0.0.1:{free_port()}")


def _event(signer: SecpEventSigner, name: str, created_at: int, provider_id: str = "node") -> Event:
    listing = Listing.create(
        provider_id=provider_id, endpoints=("https://n.example",), mints=(), version="1", name=name, about=""
    )
    unsigned = listing.event(signer.public_key, created_at)
    return unsigned.signed(signer.sign(unsigned.id))


def _own(signer: SecpEventSigner, *d_tags: str) -> EventQuery:
    return EventQuery(kinds=(ANNOUNCEMENT_KIND,), authors=(signer.public_key,), d_tags=d_tags, limit=10)


async def test_relay_returns_published_event(relay: Relay) -> None:
    signer = SecpEventSigner(secrets.token_bytes(32))
    event = _event(signer, "Node", int(time.time()))

    await relay.publish(event)
    result = await relay.query(_own(signer))

    assert result.events == (event,)


async def test_relay_publishing_same_event_twice_is_harmless(relay: Relay) -> None:
    signer = SecpEventSigner(secrets.token_bytes(32))
    event = _event(signer, "Node", int(time.time()))

    await relay.publish(event)
    await relay.publish(event)
    result = await relay.query(_own(signer))

    assert result.events == (event,)


async def test_relay_keeps_only_newest_per_author_and_d(relay: Relay) -> None:
    signer = SecpEventSigner(secrets.token_bytes(32))
    now = int(time.time())
    await relay.publish(_event(signer, "Old", now - 60))
    newer = _event(signer, "New", now)
    other_d = _event(signer, "Other", now - 30, provider_id="other")

    await relay.publish(newer)
    await relay.publish(other_d)
    result = await relay.query(_own(signer))

    assert set(result.events) == {newer, other_d}
    assert (await relay.query(_own(signer, "node"))).events == (newer,)


async def test_relay_query_honours_limit(relay: Relay) -> None:
    signer = SecpEventSigner(secrets.token_bytes(32))
    now = int(time.time())
    for index in range(3):
        await relay.publish(_event(signer, f"N{index}", now - index, provider_id=f"d{index}"))

    result = await relay.query(EventQuery(kinds=(ANNOUNCEMENT_KIND,), authors=(signer.public_key,), limit=2))

    assert len(result.events) == 2


async def test_relay_raises_unavailable_when_unreachable(dead_relay: Relay) -> None:
    signer = SecpEventSigner(secrets.token_bytes(32))

    with pytest.raises(RelayUnavailableError):
        await dead_relay.publish(_event(signer, "Node", 1))
    with pytest.raises(RelayUnavailableError):
        await dead_relay.query(_own(signer))
