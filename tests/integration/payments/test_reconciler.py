"""The reconciler and redemption fencing on real SQL (SQLite and PostgreSQL), against a real nutshell mint where the
mint's behaviour matters: stale redemptions and ambiguous sends are settled, tokens are never lost (SPEC §7.2, §7.4)."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from app.adapters.cashu.codec import CashuTokenCodec
from app.adapters.cashu.mint import HttpCashuMint
from app.adapters.sql import SqlDatabase, SqlLedger, SqlLedgerAudit, migrate
from app.adapters.sql.redemptions import SqlRedemptions
from app.adapters.sql.wallet import SqlWallet
from app.domain.accounts import ReservationRequest
from app.domain.cashu import PendingOutput, Proof, ProofState
from app.domain.errors import (
    MintOutcomeUnknownError,
    MintUnreachableError,
    RedemptionPendingError,
    RequestInProgressError,
)
from app.domain.money import Msat
from app.domain.services.payments import MintPolicy, RedemptionService
from app.domain.services.reconciler import Outcome, ReconcilerService
from app.domain.services.refunds import RefundService
from app.domain.wallet import RedemptionState, token_key_hash
from tests.fakes.clock import FixedClock
from tests.fakes.mint import FakeMint
from tests.integration.payments.conftest import new_token
from tests.support.mint import RunningMint
from tests.support.nutshell import NutshellWallet

TIMEOUT = 10.0
LEASE = timedelta(minutes=5)
STALE = 2 * TIMEOUT + 1
CODEC = CashuTokenCodec()


class FlakyMint:
    """A real mint behind failure knobs: `lose_swap_reply` applies the next swap but raises MintOutcomeUnknownError
    (the reply was lost); `checkstate_down` makes that many next checkstate calls raise MintUnreachableError."""

    def __init__(self, real: HttpCashuMint) -> None:
        self.real = real
        self.lose_swap_reply = False
        self.checkstate_down = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    async def swap(self, mint_url: str, inputs: Sequence[Proof], outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        signed = await self.real.swap(mint_url, inputs, outputs)
        if self.lose_swap_reply:
            self.lose_swap_reply = False
            msg = "reply lost"
            raise MintOutcomeUnknownError(msg)
        return signed

    async def check_state(self, mint_url: str, ys: Sequence[str]) -> Sequence[ProofState]:
        if self.checkstate_down:
            self.checkstate_down -= 1
            msg = "down"
            raise MintUnreachableError(msg)
        return await self.real.check_state(mint_url, ys)


@dataclass
class Node:
    database: SqlDatabase
    ledger: SqlLedger
    redemptions: SqlRedemptions
    wallet: SqlWallet
    clock: FixedClock


@pytest.fixture(params=["sqlite", "postgres"])
async def node(request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    """A database of this test's own (the node wallet must hold only this test's proofs), audited afterwards."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_database_url")  # audited by the autouse fixture
    else:
        url = request.getfixturevalue("empty_postgres_url")  # dropped before the autouse audit: audited here
        await migrate(url)
    database = SqlDatabase.create(url)
    try:
        yield Node(database, SqlLedger(database), SqlRedemptions(database), SqlWallet(database), FixedClock())
        assert await SqlLedgerAudit(database).violations() == []
    finally:
        await database.dispose()


@pytest.fixture
async def real_mint() -> AsyncIterator[HttpCashuMint]:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        yield HttpCashuMint(client, timeout_seconds=TIMEOUT)


def _redemption(node: Node, mint: object, mint_url: str) -> RedemptionService:
    return RedemptionService(
        codec=CODEC,
        mint=mint,  # type: ignore[arg-type]  # FlakyMint forwards the rest of the port to the real adapter
        redemptions=node.redemptions,
        ledger=node.ledger,
        clock=node.clock,
        policy=MintPolicy(trusted_mints=(mint_url,), unit="sat"),
        timeout_seconds=TIMEOUT,
    )


def _reconciler(node: Node, mint: HttpCashuMint | FakeMint) -> ReconcilerService:
    return ReconcilerService(
        mint=mint, redemptions=node.redemptions, wallet=node.wallet, clock=node.clock, timeout_seconds=TIMEOUT
    )


async def test_reconciler_credits_a_stale_redemption_whose_swap_landed_at_a_real_mint(
    node: Node, real_mint: HttpCashuMint, wallet: NutshellWallet, trusted_mint: RunningMint, tmp_path: Path
) -> None:
    token = await new_token(wallet, 100)
    key_hash = token_key_hash(token)
    flaky = FlakyMint(real_mint)
    flaky.lose_swap_reply, flaky.checkstate_down = True, 1
    with pytest.raises(RedemptionPendingError):
        await _redemption(node, flaky, trusted_mint.url).redeem(token, key_hash=key_hash)
    node.clock.advance(STALE)

    report = await _reconciler(node, real_mint).run_once()
    again = await _reconciler(node, real_mint).run_once()

    assert report.count(Outcome.CREDITED) == 1
    assert again.total == 0
    key = await node.ledger.get_key(key_hash)
    assert key is not None
    assert key.balance == Msat(100_000)
    refunds = RefundService(wallet=node.wallet, mint=real_mint, codec=CODEC, clock=node.clock)
    refund = await refunds.refund(key)  # the restored proofs are good money
    receiver = NutshellWallet(trusted_mint.url, tmp_path / "receiver")
    assert await receiver.receive(refund.token) == 100


async def test_reconciler_issues_an_ambiguous_send_whose_swap_landed_and_nutshell_receives_it(
    node: Node, real_mint: HttpCashuMint, wallet: NutshellWallet, trusted_mint: RunningMint, tmp_path: Path
) -> None:
    token = await new_token(wallet, 100)
    key_hash = token_key_hash(token)
    await _redemption(node, real_mint, trusted_mint.url).redeem(token, key_hash=key_hash)
    hold = ReservationRequest("req-charge", key_hash, Msat(1_000), node.clock.now(), node.clock.now() + LEASE)
    await node.ledger.reserve(hold)
    await node.ledger.settle("req-charge", Msat(1_000), node.clock.now())  # 99 sat left: the send needs a swap
    flaky = FlakyMint(real_mint)
    flaky.lose_swap_reply, flaky.checkstate_down = True, 1
    refunds = RefundService(wallet=node.wallet, mint=flaky, codec=CODEC, clock=node.clock)  # type: ignore[arg-type]
    key = await node.ledger.get_key(key_hash)
    assert key is not None
    with pytest.raises(MintUnreachableError):
        await refunds.refund(key)
    with pytest.raises(RequestInProgressError):  # not "no balance", not 410: it is being settled
        await refunds.latest(key_hash)
    node.clock.advance(STALE)

    report = await _reconciler(node, real_mint).run_once()

    assert report.count(Outcome.ISSUED) == 1
    latest = await refunds.latest(key_hash)
    assert latest is not None
    assert latest.amount == 99
    receiver = NutshellWallet(trusted_mint.url, tmp_path / "receiver")
    assert await receiver.receive(latest.token) == 99
    assert await node.wallet.balance(trusted_mint.url, "sat") == 1  # the change is back in the node wallet


async def test_reconciler_reverses_an_ambiguous_send_that_never_reached_a_real_mint(
    node: Node, real_mint: HttpCashuMint, wallet: NutshellWallet, trusted_mint: RunningMint
) -> None:
    token = await new_token(wallet, 100)
    key_hash = token_key_hash(token)
    await _redemption(node, real_mint, trusted_mint.url).redeem(token, key_hash=key_hash)
    key = await node.ledger.get_key(key_hash)
    assert key is not None
    dropped = FlakyMint(real_mint)
    dropped.checkstate_down = 1

    async def never_sent(mint_url: str, inputs: Sequence[Proof], outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        msg = "no answer"
        raise MintOutcomeUnknownError(msg)

    dropped.swap = never_sent  # type: ignore[method-assign]
    hold = ReservationRequest("req-charge", key_hash, Msat(1_000), node.clock.now(), node.clock.now() + LEASE)
    await node.ledger.reserve(hold)
    await node.ledger.settle("req-charge", Msat(1_000), node.clock.now())
    key = await node.ledger.get_key(key_hash)
    assert key is not None
    refunds = RefundService(wallet=node.wallet, mint=dropped, codec=CODEC, clock=node.clock)  # type: ignore[arg-type]
    with pytest.raises(MintUnreachableError):
        await refunds.refund(key)
    node.clock.advance(STALE)

    report = await _reconciler(node, real_mint).run_once()

    assert report.count(Outcome.REVERSED) == 1
    after = await node.ledger.get_key(key_hash)
    assert after is not None
    assert after.balance == Msat(99_000)
    assert [e.kind for e in await node.ledger.entries_for_key(key_hash)][-1] == "refund_reversal"


class GatedMint(FakeMint):
    """FakeMint whose first swap stalls until `may_send`, lands, and answers only after `may_return`."""

    def __init__(self, url: str) -> None:
        super().__init__({url: 0})
        self.may_send, self.landed, self.may_return, self.in_swap = (asyncio.Event() for _ in range(4))
        self._swaps = 0

    async def swap(self, mint_url: str, inputs: Sequence[Proof], outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        self._swaps += 1
        if self._swaps == 1:
            self.in_swap.set()
            await self.may_send.wait()
            signed = await super().swap(mint_url, inputs, outputs)
            self.landed.set()
            await self.may_return.wait()
            return signed
        await self.landed.wait()
        return await super().swap(mint_url, inputs, outputs)


async def test_restarted_redemption_racing_the_live_first_attempt_credits_the_token_once_on_sql(node: Node) -> None:
    url = "http://mint.test"
    mint = GatedMint(url)
    service = _redemption(node, mint, url)
    token = CODEC.encode_token(mint.issue(url, 64))
    key_hash = token_key_hash(token)
    first = asyncio.create_task(service.redeem(token, key_hash=key_hash))
    await mint.in_swap.wait()
    node.clock.advance(STALE)  # the first attempt's claim now looks stale
    second = asyncio.create_task(service.redeem(token, key_hash=key_hash))
    await asyncio.sleep(0.05)  # the second restarted the row and waits at the mint
    mint.may_send.set()  # the first lands; the second then gets 11001 for the same inputs

    second_result = await second
    mint.may_return.set()
    first_result = await first

    assert (first_result.credited, second_result.credited) == (Msat(64_000), Msat(64_000))
    key = await node.ledger.get_key(key_hash)
    assert key is not None
    assert key.balance == Msat(64_000)
    row = await node.redemptions.get(CODEC.decode_token(token).token_hash)
    assert row is not None
    assert row.state is RedemptionState.CREDITED
    assert await node.wallet.balance(url, "sat") == 64
    assert [e.kind for e in await node.ledger.entries_for_key(key_hash)] == ["deposit"]
