"""Two nodes on one database and one real relay: only the `nostr_publish` lease holder publishes (SPEC §3)."""

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from app.adapters.nostr import SecpEventSigner, WebsocketRelay
from app.adapters.sql import SqlDatabase
from app.domain.nostr import ANNOUNCEMENT_KIND, EventQuery
from app.infrastructure.app import create_app
from app.infrastructure.nostr_jobs import PUBLISH_LEASE_NAME, NostrJobs
from tests.support.backends import free_port
from tests.support.node import node_settings
from tests.support.relay import running_relay

DEAD_UPSTREAM = f"http://127.0.0.1:{free_port()}/v1"
WAIT_SECONDS = 20.0


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_relay(tmp_path_factory.mktemp("relay")) as url:
        yield url


async def _lease_holders(url: str) -> list[str]:
    database = SqlDatabase.create(url, pool_size=1, max_overflow=0)
    try:
        async with database.read() as conn:
            rows = await conn.execute(text("SELECT holder FROM job_leases WHERE name = :n"), {"n": PUBLISH_LEASE_NAME})
            return [str(row.holder) for row in rows]
    finally:
        await database.dispose()


async def _wait_until_both_decided_and_published(jobs: list[NostrJobs], relay: WebsocketRelay, own: EventQuery) -> int:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if all(j.leading is not None for j in jobs):
            events = (await relay.query(own)).events
            if events:
                return len(events)
        await asyncio.sleep(0.2)
    pytest.fail(f"the nodes did not settle the lease and publish within {WAIT_SECONDS} s")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_two_nodes_sharing_a_database_publish_from_lease_holder_only(
    backend: str, relay_url: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(f"{backend}_database_url")
    secret = secrets.token_bytes(32)
    provider_id = f"lease-{secrets.token_hex(4)}"
    settings = node_settings(
        url,
        DEAD_UPSTREAM,
        NSEC=secret.hex(),
        RELAYS=relay_url,
        PROVIDER_ID=provider_id,
        HTTP_URL="https://node.example",
        PROVIDERS_REFRESH_INTERVAL_SECONDS="0",
    )
    apps = [create_app(settings), create_app(settings)]
    jobs: list[NostrJobs] = [app.state["nostr_jobs"] for app in apps]
    relay = WebsocketRelay(relay_url)
    own = EventQuery(
        kinds=(ANNOUNCEMENT_KIND,), authors=(SecpEventSigner(secret).public_key,), d_tags=(provider_id,), limit=10
    )

    async with AsyncTestClient(app=apps[0], timeout=30), AsyncTestClient(app=apps[1], timeout=30):
        published = await _wait_until_both_decided_and_published(jobs, relay, own)
        leading = [j.leading for j in jobs]
        holders = [j.publish_lease.holder if j.publish_lease is not None else None for j in jobs]
        holders_while_running = await _lease_holders(url)
    holders_after_shutdown = await _lease_holders(url)

    assert published == 1
    assert sorted(leading, key=bool) == [False, True]
    assert holders_while_running == [holders[leading.index(True)]]
    assert holders_after_shutdown == []  # released on shutdown, so a standby can take over at once
