"""Nostr publishing as a leased job: with one shared lease store only the holder publishes; others stand by."""

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from app.domain.nostr import REPUBLISH_SECONDS, Event
from app.infrastructure.container import Adapters, new_instance_id
from app.infrastructure.nostr_jobs import (
    PUBLISH_LEASE_MARGIN_SECONDS,
    PUBLISH_LEASE_NAME,
    STANDBY_RETRY_SECONDS,
    NostrJobs,
)
from app.infrastructure.settings import Settings, load_settings
from tests.fakes.clock import FixedClock
from tests.fakes.jobs import InMemoryJobLeases
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.nostr_keys import FakeEventSigner, FakeSignatureVerifier
from tests.fakes.relay import FakeRelay
from tests.fakes.storage import FakeStorageHealth


class StopLoopError(BaseException):
    """Ends a job loop from the fake sleep (BaseException: the loops only catch Exception)."""


class RecordingSleep:
    """Records requested delays instead of sleeping; stops the loop after `limit` sleeps."""

    def __init__(self, limit: int, on_sleep: Callable[[float], None] | None = None) -> None:
        self.delays: list[float] = []
        self._limit = limit
        self._on_sleep = on_sleep

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self._on_sleep is not None:
            self._on_sleep(seconds)
        if len(self.delays) >= self._limit:
            raise StopLoopError


def _settings(**env: str) -> Settings:
    base = {
        "CASHU_MINTS": "https://mint.example",
        "HTTP_URL": "https://node.example",
        "RELAYS": "wss://r.example",
        "PROVIDERS_REFRESH_INTERVAL_SECONDS": "0",
    }
    base.update(env)
    return load_settings(base)


def _adapters(clock: FixedClock, relay: FakeRelay, leases: InMemoryJobLeases | None, instance_id: str) -> Adapters:
    ledger = InMemoryLedger()
    return Adapters(
        clock=clock,
        ledger=ledger,
        audit=InMemoryLedgerAudit(ledger),
        storage_health=FakeStorageHealth(),
        relays=(relay,),
        nostr_signer=FakeEventSigner(),  # every instance of one node signs with the node's key
        signature_verifier=FakeSignatureVerifier(),
        job_leases=leases,
        instance_id=instance_id,
    )


def _node(
    clock: FixedClock, relay: FakeRelay, leases: InMemoryJobLeases | None, instance_id: str, sleep: RecordingSleep
) -> NostrJobs:
    built = NostrJobs.build(_settings(), _adapters(clock, relay, leases, instance_id))
    return NostrJobs(
        relays=built.relays,
        discovery=built.discovery,
        publisher=built.publisher,
        publish_skipped=built.publish_skipped,
        refresh_interval_seconds=900,
        clock=clock,
        sleep=sleep,
        jitter=lambda: 0.0,
        publish_lease=built.publish_lease,
    )


async def _one_run(jobs: NostrJobs, relay: FakeRelay) -> None:
    with pytest.raises(StopLoopError):
        await jobs.publish_loop(relay)


def test_build_leases_publishing_as_nostr_publish_held_by_instance_id() -> None:
    jobs = NostrJobs.build(_settings(), _adapters(FixedClock(), FakeRelay(), InMemoryJobLeases(), "node-a"))

    assert jobs.publish_lease is not None
    assert (jobs.publish_lease.name, jobs.publish_lease.holder) == (PUBLISH_LEASE_NAME, "node-a")
    assert jobs.publish_lease.margin_seconds == PUBLISH_LEASE_MARGIN_SECONDS


def test_build_publishes_unleased_when_adapters_have_no_lease_store() -> None:
    jobs = NostrJobs.build(_settings(), _adapters(FixedClock(), FakeRelay(), None, "node-a"))

    assert jobs.publish_lease is None


def test_new_instance_id_differs_per_call() -> None:
    assert new_instance_id() != new_instance_id()


async def test_publish_loop_publishes_on_one_instance_only_when_two_share_the_lease_store() -> None:
    clock, relay, leases = FixedClock(), FakeRelay(), InMemoryJobLeases()
    sleep_a, sleep_b = RecordingSleep(limit=1), RecordingSleep(limit=1)
    node_a = _node(clock, relay, leases, "node-a", sleep_a)
    node_b = _node(clock, relay, leases, "node-b", sleep_b)

    await asyncio.gather(_one_run(node_a, relay), _one_run(node_b, relay))

    assert len(relay.published) == 1
    assert len(relay.queries) == 1  # the standby instance did not even look at the relay
    assert sleep_a.delays == [REPUBLISH_SECONDS]
    assert sleep_b.delays == [STANDBY_RETRY_SECONDS]
    assert (node_a.leading, node_b.leading) == (True, False)


async def test_publish_loop_renews_lease_to_cover_its_sleep_plus_margin() -> None:
    clock, relay, leases = FixedClock(), FakeRelay(), InMemoryJobLeases()

    await _one_run(_node(clock, relay, leases, "node-a", RecordingSleep(limit=1)), relay)

    expires = clock.current.timestamp() + REPUBLISH_SECONDS + PUBLISH_LEASE_MARGIN_SECONDS
    holder, expires_at = leases.leases[PUBLISH_LEASE_NAME]
    assert (holder, expires_at.timestamp()) == ("node-a", expires)


async def test_publish_loop_standby_takes_over_only_after_holder_lease_lapses() -> None:
    clock, relay, leases = FixedClock(), FakeRelay(), InMemoryJobLeases()
    await _one_run(_node(clock, relay, leases, "node-a", RecordingSleep(limit=1)), relay)  # then node-a dies
    clock.advance(REPUBLISH_SECONDS + PUBLISH_LEASE_MARGIN_SECONDS - 1)
    early = RecordingSleep(limit=1)
    await _one_run(_node(clock, relay, leases, "node-b", early), relay)
    clock.advance(1)
    late = RecordingSleep(limit=1)

    await _one_run(_node(clock, relay, leases, "node-b", late), relay)

    assert early.delays == [STANDBY_RETRY_SECONDS]
    assert late.delays == [REPUBLISH_SECONDS]
    assert len(relay.published) == 2  # node-a's, then node-b's replacement of the 24 h old copy
    assert leases.leases[PUBLISH_LEASE_NAME][0] == "node-b"


async def test_publish_loop_skips_cycle_when_lease_store_fails() -> None:
    clock, relay, leases = FixedClock(), FakeRelay(), InMemoryJobLeases()
    leases.fail_next = OSError("database is down")
    sleep = RecordingSleep(limit=2)

    await _one_run(_node(clock, relay, leases, "node-a", sleep), relay)

    assert sleep.delays == [STANDBY_RETRY_SECONDS, REPUBLISH_SECONDS]
    assert len(relay.published) == 1


class LeaseStealingRelay(FakeRelay):
    """A relay so slow that the publisher's lease lapses during `publish` and `thief` takes it meanwhile."""

    def __init__(self, clock: FixedClock, leases: InMemoryJobLeases, thief: str) -> None:
        super().__init__()
        self._clock, self._leases, self._thief = clock, leases, thief

    async def publish(self, event: Event) -> None:
        await super().publish(event)
        self._clock.advance(PUBLISH_LEASE_MARGIN_SECONDS)
        now = self._clock.now()
        await self._leases.acquire(PUBLISH_LEASE_NAME, self._thief, now, now + timedelta(hours=1))


async def test_publish_loop_checks_back_soon_when_lease_was_lost_during_cycle() -> None:
    clock, leases = FixedClock(), InMemoryJobLeases()
    relay = LeaseStealingRelay(clock, leases, thief="node-b")
    sleep = RecordingSleep(limit=1)
    node_a = _node(clock, relay, leases, "node-a", sleep)

    await _one_run(node_a, relay)

    assert len(relay.published) == 1
    assert sleep.delays == [STANDBY_RETRY_SECONDS]
    assert node_a.leading is False
    assert leases.leases[PUBLISH_LEASE_NAME][0] == "node-b"


async def test_stop_releases_publish_lease_for_another_instance() -> None:
    clock, relay, leases = FixedClock(), FakeRelay(), InMemoryJobLeases()
    node_a = NostrJobs.build(_settings(), _adapters(clock, relay, leases, "node-a"))
    node_a.start()
    await asyncio.sleep(0)  # the publisher runs its first cycle, then sleeps 24 h
    held_while_running = leases.leases[PUBLISH_LEASE_NAME][0]

    await node_a.stop()

    assert held_while_running == "node-a"
    assert PUBLISH_LEASE_NAME not in leases.leases
    assert await leases.acquire(PUBLISH_LEASE_NAME, "node-b", clock.now(), clock.now()) is True
