"""SPEC §18 scenario 20 against a real loopback relay: the exact signed 38421 listing, /v1/providers dropping
tampered events, and an unreachable relay that delays neither startup nor requests."""

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace

import coincurve
import httpx
import pytest
from litestar.testing import AsyncTestClient

from app.adapters.nostr import SecpEventSigner, SecpSignatureVerifier, WebsocketRelay
from app.adapters.system.clock import SystemClock
from app.domain.node import VERSION
from app.domain.nostr import ANNOUNCEMENT_KIND, Event, EventQuery, Listing
from app.domain.nostr_bech32 import npub_encode, nsec_encode
from app.domain.services.nostr import AnnouncementPublisher
from app.infrastructure.app import create_app
from app.infrastructure.nostr_jobs import NostrJobs
from tests.support.backends import free_port
from tests.support.node import ServedNode, node_settings
from tests.support.relay import running_relay

DEAD_UPSTREAM = f"http://127.0.0.1:{free_port()}/v1"
WAIT_SECONDS = 20.0


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_relay(tmp_path_factory.mktemp("relay")) as url:
        yield url


def _listing(name: str, provider_id: str, urls: tuple[str, ...]) -> Listing:
    return Listing.create(
        provider_id=provider_id, endpoints=urls, mints=("https://mint.example",), version="9.9.9", name=name, about="x"
    )


def _signed(signer: SecpEventSigner, listing: Listing, created_at: int) -> Event:
    unsigned = listing.event(signer.public_key, created_at)
    return unsigned.signed(signer.sign(unsigned.id))


def _bip340_valid(event: Event) -> bool:
    """Checked with coincurve directly, independently of the node's verifier."""
    key = coincurve.PublicKeyXOnly(bytes.fromhex(event.pubkey))
    return bool(key.verify(bytes.fromhex(event.sig), bytes.fromhex(event.id)))


async def _wait_for(relay: WebsocketRelay, query: EventQuery, name: str) -> tuple[Event, ...]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        events = (await relay.query(query)).events
        if any(json.loads(e.content).get("name") == name for e in events):
            return events
        await asyncio.sleep(0.2)
    pytest.fail(f"no event named {name!r} reached the relay within {WAIT_SECONDS} s")


async def test_node_publishes_exact_signed_listing_that_replaces_older_version(
    relay_url: str, sqlite_database_url: str
) -> None:
    secret = secrets.token_bytes(32)
    signer = SecpEventSigner(secret)
    relay = WebsocketRelay(relay_url)
    older = _signed(signer, _listing("Old name", "scenario-20", ("https://old.example",)), int(time.time()) - 3600)
    await relay.publish(older)
    settings = node_settings(
        sqlite_database_url,
        DEAD_UPSTREAM,
        NSEC=nsec_encode(secret.hex()),
        RELAYS=relay_url,
        PROVIDER_ID="scenario-20",
        NAME="Scenario Node",
        DESCRIPTION="Announces itself",
        HTTP_URL="https://node.example",
        ONION_URL="http://nodeexample.onion",
        CASHU_MINTS="https://mint-b.example,https://mint-c.example",
        PRIMARY_MINT_URL="https://mint-a.example",
    )
    own = EventQuery(kinds=(ANNOUNCEMENT_KIND,), authors=(signer.public_key,), d_tags=("scenario-20",), limit=10)

    with ServedNode(settings) as node:
        events = await _wait_for(relay, own, "Scenario Node")
        async with httpx.AsyncClient(timeout=10) as client:
            info = (await client.get(f"{node.url}/v1/info")).json()

    assert len(events) == 1  # the older version was replaced
    event = events[0]
    assert event.kind == 38421
    assert event.tags == (
        ("d", "scenario-20"),
        ("u", "https://node.example"),
        ("u", "http://nodeexample.onion"),
        ("mint", "https://mint-a.example"),
        ("mint", "https://mint-b.example"),
        ("mint", "https://mint-c.example"),
        ("version", VERSION),
    )
    assert json.loads(event.content) == {"name": "Scenario Node", "about": "Announces itself"}
    assert event.created_at > older.created_at
    assert event.id_is_valid
    assert _bip340_valid(event)
    assert info["npub"] == npub_encode(signer.public_key)


async def test_publisher_skips_relay_that_holds_same_fresh_listing_and_republishes_changed_one(relay_url: str) -> None:
    signer, relay = SecpEventSigner(secrets.token_bytes(32)), WebsocketRelay(relay_url)
    listing = _listing("Steady", "steady", ("https://steady.example",))
    publisher = AnnouncementPublisher(listing, signer, SecpSignatureVerifier(), SystemClock())
    first = await publisher.publish_to(relay)

    again = await publisher.publish_to(relay)
    changed = await AnnouncementPublisher(
        replace(listing, name="Renamed"), signer, SecpSignatureVerifier(), SystemClock()
    ).publish_to(relay)

    assert first.published
    assert not again.published
    assert again.event == first.event
    assert changed.published
    assert changed.event.created_at > first.event.created_at
    own = EventQuery(kinds=(ANNOUNCEMENT_KIND,), authors=(signer.public_key,), limit=10)
    assert (await relay.query(own)).events == (changed.event,)


async def test_providers_lists_genuine_announcement_and_drops_tampered_ones(
    relay_url: str, sqlite_database_url: str
) -> None:
    relay = WebsocketRelay(relay_url)
    now = int(time.time())
    genuine_signer, tampered_signer, forged_signer = (SecpEventSigner(secrets.token_bytes(32)) for _ in range(3))
    genuine = _signed(genuine_signer, _listing("Genuine", "g", ("https://genuine.example",)), now)
    original = _signed(tampered_signer, _listing("Tampered", "t", ("https://tampered.example",)), now)
    tampered = replace(original, content=original.content.replace("Tampered", "Hijacked"))  # id/sig no longer match
    forged = replace(_signed(forged_signer, _listing("Forged", "f", ("https://forged.example",)), now), sig="ab" * 64)
    for event in (genuine, tampered, forged):
        await relay.publish(event)  # the test relay stores without checking signatures
    assert {e.id for e in (await relay.query(EventQuery(kinds=(ANNOUNCEMENT_KIND,), limit=500))).events} >= {
        genuine.id,
        tampered.id,
        forged.id,
    }
    settings = node_settings(sqlite_database_url, DEAD_UPSTREAM, RELAYS=relay_url)

    with ServedNode(settings) as node:
        listed = await _wait_for_provider(node, genuine_signer.public_key)
        async with httpx.AsyncClient(timeout=10) as client:
            only = {"pubkey": npub_encode(genuine_signer.public_key)}
            filtered = (await client.get(f"{node.url}/v1/providers/", params=only)).json()

    names = {p["name"] for p in listed}
    assert "Genuine" in names
    assert names.isdisjoint({"Tampered", "Hijacked", "Forged"})
    assert [p["id"] for p in filtered["providers"]] == ["g"]
    assert filtered["providers"][0]["endpoint_urls"] == ["https://genuine.example"]


async def _wait_for_provider(node: ServedNode, pubkey: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + WAIT_SECONDS
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < deadline:
            providers: list[dict[str, object]] = (await client.get(f"{node.url}/v1/providers")).json()["providers"]
            if any(p["pubkey"] == pubkey for p in providers):
                return providers
            await asyncio.sleep(0.2)
    pytest.fail(f"provider {pubkey} was not listed within {WAIT_SECONDS} s")


@asynccontextmanager
async def _black_hole(expected: int) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A TCP server that accepts connections and never answers: the worst kind of unreachable relay.

    The event is set once `expected` connections arrived."""
    accepted: list[int] = []
    dialled = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        if len(accepted) >= expected:
            dialled.set()
        try:
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}", dialled
    finally:
        server.close()


async def test_unreachable_relay_delays_neither_startup_nor_requests(sqlite_database_url: str) -> None:
    async with _black_hole(expected=2) as (url, dialled):  # the publisher and the discovery job
        settings = node_settings(
            sqlite_database_url,
            DEAD_UPSTREAM,
            NSEC=secrets.token_bytes(32).hex(),
            RELAYS=url,
            HTTP_URL="https://node.example",
        )
        app = create_app(settings)
        jobs: NostrJobs = app.state["nostr_jobs"]

        async with AsyncTestClient(app=app, timeout=30) as client:
            info = await client.get("/v1/info")
            providers = await client.get("/v1/providers")
            await asyncio.wait_for(dialled.wait(), WAIT_SECONDS)
            pending = [task.get_name() for task in jobs.tasks if not task.done()]
            again = await client.get("/v1/info")

    assert info.status_code == 200
    assert providers.status_code == 200
    assert providers.json() == {"providers": []}
    assert again.status_code == 200
    assert sorted(pending) == ["nostr-discovery", f"nostr-publish:{url}"]
