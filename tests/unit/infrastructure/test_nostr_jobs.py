"""Nostr jobs: what is published when, per-relay backoff, discovery refresh, and start/stop without waiting."""

import asyncio
from collections.abc import Callable

import pytest

from app.domain.nostr import REPUBLISH_SECONDS
from app.infrastructure.container import Adapters
from app.infrastructure.nostr_jobs import NostrJobs
from app.infrastructure.settings import Settings, load_settings
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.nostr_keys import FakeEventSigner, FakeSignatureVerifier
from tests.fakes.relay import FakeRelay
from tests.fakes.storage import FakeStorageHealth


class StopLoopError(BaseException):
    """Ends a job loop from the fake sleep (BaseException: the loops only catch Exception)."""


class RecordingSleep:
    """Records requested delays instead of sleeping; stops the loop after `limit` sleeps."""

    def __init__(self, limit: int, on_sleep: Callable[[int], None] | None = None) -> None:
        self.delays: list[float] = []
        self._limit = limit
        self._on_sleep = on_sleep

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self._on_sleep is not None:
            self._on_sleep(len(self.delays))
        if len(self.delays) >= self._limit:
            raise StopLoopError


def _settings(**env: str) -> Settings:
    base = {"CASHU_MINTS": "https://mint.example", "HTTP_URL": "https://node.example", "RELAYS": "wss://r.example"}
    base.update(env)
    return load_settings(base)


def _adapters(clock: FixedClock, relays: tuple[FakeRelay, ...], signer: FakeEventSigner | None = None) -> Adapters:
    ledger = InMemoryLedger()
    return Adapters(
        clock=clock,
        ledger=ledger,
        audit=InMemoryLedgerAudit(ledger),
        storage_health=FakeStorageHealth(),
        relays=relays,
        nostr_signer=signer,
        signature_verifier=FakeSignatureVerifier(),
    )


def _jobs(settings: Settings, adapters: Adapters, sleep: RecordingSleep, jitter: float = 0.0) -> NostrJobs:
    built = NostrJobs.build(settings, adapters)
    return NostrJobs(
        relays=built.relays,
        discovery=built.discovery,
        publisher=built.publisher,
        publish_skipped=built.publish_skipped,
        refresh_interval_seconds=settings.providers_refresh_interval_seconds,
        clock=adapters.clock,
        sleep=sleep,
        jitter=lambda: jitter,
    )


# -- build -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "with_signer", "reason"),
    [
        ({}, False, "NSEC is not set"),
        ({"HTTP_URL": "http://127.0.0.1:8000"}, True, "no public HTTP_URL or ONION_URL"),
    ],
    ids=["no-nsec", "loopback-only"],
)
def test_build_skips_publishing_with_reason(env: dict[str, str], with_signer: bool, reason: str) -> None:
    settings = _settings(**env)
    adapters = _adapters(FixedClock(), (FakeRelay(),), FakeEventSigner() if with_signer else None)

    jobs = NostrJobs.build(settings, adapters)

    assert jobs.publisher is None
    assert jobs.publish_skipped is not None
    assert reason in jobs.publish_skipped


def test_build_skips_publishing_when_no_relay_is_configured() -> None:
    jobs = NostrJobs.build(_settings(), _adapters(FixedClock(), (), FakeEventSigner()))

    assert jobs.publisher is None
    assert jobs.publish_skipped == "RELAYS is empty"


def test_build_creates_publisher_with_listing_from_settings() -> None:
    settings = _settings(ONION_URL="http://abc.onion", NAME="N", DESCRIPTION="D", PROVIDER_ID="my-node")

    jobs = NostrJobs.build(settings, _adapters(FixedClock(), (FakeRelay(),), FakeEventSigner()))

    assert jobs.publisher is not None
    listing = jobs.publisher.listing
    assert listing.provider_id == "my-node"
    assert listing.urls == ("https://node.example", "http://abc.onion")
    assert listing.mints == ("https://mint.example",)
    assert (listing.name, listing.about) == ("N", "D")


def test_build_defaults_provider_id_to_pubkey_prefix() -> None:
    signer = FakeEventSigner("0123456789abcdef" * 4)

    jobs = NostrJobs.build(_settings(), _adapters(FixedClock(), (FakeRelay(),), signer))

    assert jobs.publisher is not None
    assert jobs.publisher.listing.provider_id == "0123456789ab"


def test_build_disables_discovery_when_refresh_interval_is_zero() -> None:
    jobs = NostrJobs.build(_settings(PROVIDERS_REFRESH_INTERVAL_SECONDS="0"), _adapters(FixedClock(), ()))

    assert not jobs.discovery.enabled


# -- publish loop ----------------------------------------------------------------------------------------------------
async def test_publish_loop_backs_off_5_10_20_then_waits_24h_after_success() -> None:
    clock, relay = FixedClock(), FakeRelay()
    relay.fail_next = 3
    sleep = RecordingSleep(limit=4)
    jobs = _jobs(_settings(), _adapters(clock, (relay,), FakeEventSigner()), sleep)

    with pytest.raises(StopLoopError):
        await jobs.publish_loop(relay)

    assert sleep.delays == [5, 10, 20, REPUBLISH_SECONDS]
    assert len(relay.published) == 1


async def test_publish_loop_caps_backoff_at_900_seconds_with_jitter() -> None:
    clock, relay = FixedClock(), FakeRelay()
    relay.unavailable = True
    sleep = RecordingSleep(limit=10)
    jobs = _jobs(_settings(), _adapters(clock, (relay,), FakeEventSigner()), sleep, jitter=1.0)

    with pytest.raises(StopLoopError):
        await jobs.publish_loop(relay)

    assert sleep.delays == pytest.approx([6, 12, 24, 48, 96, 192, 384, 768, 1080, 1080])


async def test_publish_loop_resets_backoff_after_success() -> None:
    clock, relay = FixedClock(), FakeRelay()
    relay.fail_next = 2

    def fail_again(count: int) -> None:
        if count == 3:  # after the success: the relay goes down again
            clock.advance(REPUBLISH_SECONDS)
            relay.fail_next = 1

    sleep = RecordingSleep(limit=5, on_sleep=fail_again)
    jobs = _jobs(_settings(), _adapters(clock, (relay,), FakeEventSigner()), sleep)

    with pytest.raises(StopLoopError):
        await jobs.publish_loop(relay)

    assert sleep.delays == [5, 10, REPUBLISH_SECONDS, 5, REPUBLISH_SECONDS]
    assert len(relay.published) == 2


async def test_publish_loop_does_not_republish_unchanged_listing_before_24h() -> None:
    clock, relay = FixedClock(), FakeRelay()

    sleep = RecordingSleep(limit=2, on_sleep=lambda _count: clock.advance(3600))
    jobs = _jobs(_settings(), _adapters(clock, (relay,), FakeEventSigner()), sleep)

    with pytest.raises(StopLoopError):
        await jobs.publish_loop(relay)

    assert len(relay.published) == 1
    assert sleep.delays == [REPUBLISH_SECONDS, REPUBLISH_SECONDS - 3600]


async def test_publish_loop_failure_on_one_relay_does_not_affect_another() -> None:
    clock, down, up = FixedClock(), FakeRelay("wss://down"), FakeRelay("wss://up")
    down.unavailable = True
    adapters = _adapters(clock, (down, up), FakeEventSigner())
    jobs = _jobs(_settings(), adapters, RecordingSleep(limit=1))

    with pytest.raises(StopLoopError):
        await jobs.publish_loop(up)

    assert len(up.published) == 1
    assert down.published == []


# -- discovery loop --------------------------------------------------------------------------------------------------
async def test_discovery_loop_refreshes_then_sleeps_for_interval() -> None:
    clock, relay = FixedClock(), FakeRelay()
    other = FakeEventSigner("cd" * 32)
    listing = NostrJobs.build(_settings(), _adapters(clock, (relay,), other)).publisher
    assert listing is not None
    await listing.publish_to(relay)
    sleep = RecordingSleep(limit=2)
    jobs = _jobs(_settings(PROVIDERS_REFRESH_INTERVAL_SECONDS="30"), _adapters(clock, (relay,)), sleep)

    with pytest.raises(StopLoopError):
        await jobs.discovery_loop()

    assert sleep.delays == [30, 30]
    assert [p.pubkey for p in jobs.discovery.providers()] == ["cd" * 32]


async def test_discovery_loop_survives_relay_failure() -> None:
    relay = FakeRelay()
    relay.unavailable = True
    sleep = RecordingSleep(limit=2)
    jobs = _jobs(_settings(), _adapters(FixedClock(), (relay,)), sleep)

    with pytest.raises(StopLoopError):
        await jobs.discovery_loop()

    assert sleep.delays == [900, 900]


# -- start / stop ----------------------------------------------------------------------------------------------------
async def test_start_returns_before_any_relay_answers_and_stop_cancels() -> None:
    relay = FakeRelay()
    jobs = NostrJobs.build(_settings(), _adapters(FixedClock(), (relay,), FakeEventSigner()))

    jobs.start()

    assert len(jobs.tasks) == 2  # one publisher for the relay, one discovery job
    assert not any(task.done() for task in jobs.tasks)
    assert relay.published == []  # nothing ran yet: start did not wait
    await asyncio.sleep(0)
    await jobs.stop()
    assert jobs.tasks == []


async def test_start_runs_no_publisher_when_publishing_is_skipped() -> None:
    jobs = NostrJobs.build(_settings(), _adapters(FixedClock(), (FakeRelay(),)))

    jobs.start()

    assert [task.get_name() for task in jobs.tasks] == ["nostr-discovery"]
    await jobs.stop()
