"""LeasedJob: the lease window it asks for, what it reports, and release."""

from datetime import timedelta

import pytest

from app.domain.services.leases import LeasedJob
from tests.fakes.clock import FixedClock
from tests.fakes.jobs import InMemoryJobLeases


def _job(leases: InMemoryJobLeases, clock: FixedClock, holder: str = "node-a") -> LeasedJob:
    return LeasedJob(leases, clock, name="nightly", holder=holder, margin_seconds=300)


async def test_hold_takes_free_lease_until_next_run_plus_margin() -> None:
    leases, clock = InMemoryJobLeases(), FixedClock()

    held = await _job(leases, clock).hold(3600)

    assert held is True
    assert leases.leases["nightly"] == ("node-a", clock.current + timedelta(seconds=3900))


async def test_hold_treats_negative_next_run_as_now() -> None:
    leases, clock = InMemoryJobLeases(), FixedClock()

    await _job(leases, clock).hold(-50)

    assert leases.leases["nightly"] == ("node-a", clock.current + timedelta(seconds=300))


async def test_hold_returns_false_while_other_holder_lease_is_live() -> None:
    leases, clock = InMemoryJobLeases(), FixedClock()
    await _job(leases, clock, "node-a").hold(60)
    clock.advance(359)

    held = await _job(leases, clock, "node-b").hold(60)

    assert held is False
    assert leases.leases["nightly"][0] == "node-a"


async def test_hold_takes_over_lease_when_other_holder_stopped_renewing() -> None:
    leases, clock = InMemoryJobLeases(), FixedClock()
    await _job(leases, clock, "node-a").hold(60)
    clock.advance(360)

    held = await _job(leases, clock, "node-b").hold(60)

    assert held is True
    assert leases.leases["nightly"][0] == "node-b"


async def test_hold_propagates_store_error() -> None:
    leases, clock = InMemoryJobLeases(), FixedClock()
    leases.fail_next = OSError("database is down")

    with pytest.raises(OSError, match="database is down"):
        await _job(leases, clock).hold()


async def test_release_frees_lease_for_another_holder_at_once() -> None:
    leases, clock = InMemoryJobLeases(), FixedClock()
    await _job(leases, clock, "node-a").hold(3600)

    released = await _job(leases, clock, "node-a").release()
    taken = await _job(leases, clock, "node-b").hold()

    assert (released, taken) == (True, True)


@pytest.mark.parametrize("margin", [0, -1])
def test_leased_job_rejects_non_positive_margin(margin: int) -> None:
    with pytest.raises(ValueError, match="lease margin"):
        LeasedJob(InMemoryJobLeases(), FixedClock(), name="n", holder="h", margin_seconds=margin)
