"""The reconciler as a leased job: only the lease holder reconciles; a failing pass does not end the loop."""

import asyncio

import pytest
from litestar.testing import AsyncTestClient

from app.domain.errors import MintUnreachableError, RedemptionPendingError, StorageUnavailableError
from app.domain.services.payments import MintPolicy, RedemptionService
from app.domain.wallet import RedemptionState, token_key_hash
from app.infrastructure.app import create_app
from app.infrastructure.container import Adapters
from app.infrastructure.reconciler_jobs import INTERVAL_SECONDS, RECONCILER_LEASE_NAME, ReconcilerJob
from app.infrastructure.settings import Settings, load_settings
from tests.fakes.clock import FixedClock
from tests.fakes.jobs import InMemoryJobLeases
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.mint import FakeMint
from tests.fakes.storage import FakeStorageHealth
from tests.fakes.wallet import InMemoryRedemptions, InMemoryWallet, ProofStore

MINT = "https://mint.example"


class StopLoopError(BaseException):
    """Ends the job loop from the fake sleep (BaseException: the loop only catches Exception)."""


def _settings() -> Settings:
    return load_settings({"CASHU_MINTS": MINT, "MINT_OPERATION_TIMEOUT_SECONDS": "30"})


def _adapters(clock: FixedClock, leases: InMemoryJobLeases | None, instance_id: str, *, cashu: bool = True) -> Adapters:
    ledger = InMemoryLedger()
    proofs = ProofStore()
    return Adapters(
        clock=clock,
        ledger=ledger,
        audit=InMemoryLedgerAudit(ledger),
        storage_health=FakeStorageHealth(),
        mint=FakeMint({MINT: 0}) if cashu else None,
        wallet=InMemoryWallet(ledger, proofs) if cashu else None,
        redemptions=InMemoryRedemptions(ledger, proofs) if cashu else None,
        job_leases=leases,
        instance_id=instance_id,
    )


def test_reconciler_job_is_not_built_without_cashu_adapters() -> None:
    assert ReconcilerJob.build(_settings(), _adapters(FixedClock(), None, "a", cashu=False)) is None


async def test_reconciler_job_runs_only_on_the_lease_holder() -> None:
    clock, leases = FixedClock(), InMemoryJobLeases()
    first = ReconcilerJob.build(_settings(), _adapters(clock, leases, "a"))
    second = ReconcilerJob.build(_settings(), _adapters(clock, leases, "b"))
    assert first is not None
    assert second is not None

    ran = (await first.cycle(), await second.cycle())

    assert ran == (True, False)
    assert leases.leases[RECONCILER_LEASE_NAME][0] == "a"
    await first.stop()  # hands the lease back: the other instance takes over at once
    assert await second.cycle() is True


async def test_reconciler_job_settles_a_stale_redemption_and_keeps_running_after_a_failed_pass() -> None:
    clock = FixedClock()
    adapters = _adapters(clock, None, "a")
    job = ReconcilerJob.build(_settings(), adapters)
    assert job is not None
    mint, redemptions = adapters.mint, adapters.redemptions
    assert isinstance(mint, FakeMint)
    assert isinstance(redemptions, InMemoryRedemptions)
    service = job.reconciler
    token = adapters.token_codec.encode_token(mint.issue(MINT, 16))
    redemption = RedemptionService(
        codec=adapters.token_codec,
        mint=mint,
        redemptions=redemptions,
        ledger=adapters.ledger,
        clock=clock,
        policy=MintPolicy(trusted_mints=(MINT,), unit="sat"),
        timeout_seconds=30,
    )
    mint.lose_swap_replies = 1
    mint.fail_next["check_state"] = MintUnreachableError("down")
    with pytest.raises(RedemptionPendingError):
        await redemption.redeem(token, key_hash=token_key_hash(token))
    clock.advance(61)
    redemptions.fail_next = StorageUnavailableError("db down")
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise StopLoopError

    job = ReconcilerJob(service, lease=None, sleep=sleep)
    with pytest.raises(StopLoopError):
        await job.loop()

    assert sleeps == [INTERVAL_SECONDS, INTERVAL_SECONDS]
    row = redemptions.rows[adapters.token_codec.decode_token(token).token_hash]
    assert row.state is RedemptionState.CREDITED


async def test_app_lifespan_runs_the_reconciler_under_its_lease_and_hands_it_back_on_shutdown() -> None:
    leases = InMemoryJobLeases()
    adapters = _adapters(FixedClock(), leases, "node-1")
    settings = load_settings({"CASHU_MINTS": MINT, "BTC_USD_PRICE": "100000", "RELAYS": "ws://127.0.0.1:1"})

    async with AsyncTestClient(app=create_app(settings, adapters)):
        for _ in range(100):  # the job's first cycle runs as soon as the loop gets to it
            if leases.attempts:
                break
            await asyncio.sleep(0.01)
        assert (RECONCILER_LEASE_NAME, "node-1", True) in leases.attempts

    assert RECONCILER_LEASE_NAME not in leases.leases
