"""The JobLeases contract: one job runs on one instance at a time; InMemoryJobLeases and SqlJobLeases agree."""

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from app.adapters.sql import SqlDatabase, SqlJobLeases
from app.domain.ports import JobLeases
from tests.fakes.jobs import InMemoryJobLeases

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=60)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def leases(request: pytest.FixtureRequest) -> AsyncIterator[JobLeases]:
    if request.param == "memory":
        yield InMemoryJobLeases()
        return
    url: str = request.getfixturevalue(f"{request.param}_database_url")
    database = SqlDatabase.create(url)
    try:
        yield SqlJobLeases(database)
    finally:
        await database.dispose()


def _job() -> str:
    return f"job-{secrets.token_hex(4)}"


async def test_acquire_grants_free_lease_and_refuses_other_holder_until_expiry(leases: JobLeases) -> None:
    job = _job()

    first = await leases.acquire(job, "a", NOW, NOW + TTL)
    other = await leases.acquire(job, "b", NOW + TTL - timedelta(seconds=1), NOW + 2 * TTL)
    taken_over = await leases.acquire(job, "b", NOW + TTL, NOW + 2 * TTL)
    old_holder = await leases.acquire(job, "a", NOW + TTL, NOW + 2 * TTL)

    assert (first, other, taken_over, old_holder) == (True, False, True, False)


async def test_acquire_renews_own_lease_before_expiry(leases: JobLeases) -> None:
    job = _job()
    await leases.acquire(job, "a", NOW, NOW + TTL)

    renewed = await leases.acquire(job, "a", NOW + timedelta(seconds=10), NOW + 2 * TTL)
    other = await leases.acquire(job, "b", NOW + TTL, NOW + 3 * TTL)

    assert (renewed, other) == (True, False)


async def test_release_frees_lease_only_for_its_holder(leases: JobLeases) -> None:
    job = _job()
    await leases.acquire(job, "a", NOW, NOW + TTL)

    assert await leases.release(job, "b") is False
    assert await leases.release(job, "a") is True
    assert await leases.acquire(job, "b", NOW, NOW + TTL) is True


async def test_acquire_grants_exactly_one_of_many_concurrent_holders(leases: JobLeases) -> None:
    job = _job()

    granted = await asyncio.gather(*(leases.acquire(job, f"h{i}", NOW, NOW + TTL) for i in range(20)))

    assert sum(granted) == 1


@pytest.fixture(params=["sqlite", "postgres"])
async def two_instances(request: pytest.FixtureRequest) -> AsyncIterator[tuple[JobLeases, JobLeases]]:
    """Two SqlJobLeases on separate engines (separate connection pools) over one database, like two nodes."""
    url: str = request.getfixturevalue(f"{request.param}_database_url")
    first = SqlDatabase.create(url, pool_size=5, max_overflow=5)
    second = SqlDatabase.create(url, pool_size=5, max_overflow=5)
    try:
        yield SqlJobLeases(first), SqlJobLeases(second)
    finally:
        await first.dispose()
        await second.dispose()


async def _race(
    job: str, first: tuple[JobLeases, str], second: tuple[JobLeases, str], now: datetime, rounds: int = 15
) -> tuple[list[bool], list[bool]]:
    """`rounds` interleaved acquires by each (instance, holder), all at once; each one's results in order."""
    attempts = [first, second] * rounds
    results = await asyncio.gather(*(leases.acquire(job, holder, now, now + TTL) for leases, holder in attempts))
    return list(results[0::2]), list(results[1::2])


async def test_acquire_grants_one_instance_of_two_racing_on_separate_engines(
    two_instances: tuple[JobLeases, JobLeases],
) -> None:
    a, b = two_instances
    job = _job()

    granted_a, granted_b = await _race(job, (a, "a"), (b, "b"), NOW)

    winners = {holder for holder, granted in (("a", any(granted_a)), ("b", any(granted_b))) if granted}
    assert len(winners) == 1
    # The winner renews its own live lease; the loser never gets it.
    assert (all(granted_a), any(granted_b)) == (True, False) or (any(granted_a), all(granted_b)) == (False, True)


async def test_acquire_lets_other_instance_take_lease_only_after_expiry(
    two_instances: tuple[JobLeases, JobLeases],
) -> None:
    a, b = two_instances
    job = _job()
    assert await a.acquire(job, "a", NOW, NOW + TTL) is True

    live = await _race(job, (a, "b"), (b, "c"), NOW + TTL - timedelta(seconds=1))
    after_expiry = await b.acquire(job, "b", NOW + TTL, NOW + 2 * TTL)
    old_holder = await a.acquire(job, "a", NOW + TTL, NOW + 2 * TTL)

    assert not any(live[0] + live[1])
    assert (after_expiry, old_holder) == (True, False)


async def test_acquire_grants_one_instance_when_both_race_for_an_expired_lease(
    two_instances: tuple[JobLeases, JobLeases],
) -> None:
    a, b = two_instances
    job = _job()
    await a.acquire(job, "old", NOW, NOW + TTL)

    granted_a, granted_b = await _race(job, (a, "a"), (b, "b"), NOW + TTL)

    assert any(granted_a) != any(granted_b)
    assert all(granted_a) or all(granted_b)
