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
