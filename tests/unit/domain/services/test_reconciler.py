"""ReconcilerService and the restarted-redemption race on fakes (SPEC §7.2 fencing, §7.4 reconciler)."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from app.adapters.cashu.codec import CashuTokenCodec
from app.domain.accounts import ApiKey, LedgerEntry
from app.domain.cashu import PendingOutput, Proof
from app.domain.errors import MintUnreachableError, RedemptionPendingError, RequestInProgressError
from app.domain.money import Msat
from app.domain.services.payments import MintPolicy, RedemptionService
from app.domain.services.reconciler import Outcome, ReconcilerService
from app.domain.services.refunds import RefundService
from app.domain.wallet import RedemptionState, RefundState, SendRequest, WalletProofState, token_key_hash
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.mint import FakeMint
from tests.fakes.wallet import InMemoryRedemptions, InMemoryWallet, ProofStore
from tests.unit.domain.services.test_xcashu import USAGE, _chat, _env, _json

MINT = "http://mint.test"
TIMEOUT = 30.0
STALE = 2 * TIMEOUT + 1
KEY_HASH = "k" * 64


class GatedMint(FakeMint):
    """FakeMint whose first swap waits for `may_send`, lands, sets `landed`, then waits for `may_return`."""

    def __init__(self) -> None:
        super().__init__({MINT: 0})
        self.gate_first_swap = False
        self.may_send, self.landed, self.may_return = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.in_swap = asyncio.Event()
        self._swaps = 0

    async def swap(self, mint_url: str, inputs: Sequence[Proof], outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        self._swaps += 1
        if not self.gate_first_swap:
            return await super().swap(mint_url, inputs, outputs)
        if self._swaps == 1:
            self.in_swap.set()
            await self.may_send.wait()
            signed = await super().swap(mint_url, inputs, outputs)
            self.landed.set()
            await self.may_return.wait()
            return signed
        await self.landed.wait()  # later attempts reach the mint just after the first one
        return await super().swap(mint_url, inputs, outputs)


@dataclass
class Env:
    mint: GatedMint
    ledger: InMemoryLedger
    proofs: ProofStore
    redemptions: InMemoryRedemptions
    wallet: InMemoryWallet
    clock: FixedClock
    service: RedemptionService
    refunds: RefundService
    reconciler: ReconcilerService
    codec: CashuTokenCodec = field(default_factory=CashuTokenCodec)

    def token(self, amount: int) -> str:
        return self.codec.encode_token(self.mint.issue(MINT, amount))

    def token_hash(self, token: str) -> str:
        return self.codec.decode_token(token).token_hash

    def entries(self, kind: str) -> list[int]:
        return [e.amount_msat for e in self.ledger.entries if e.kind == kind]

    def fund(self, balance_msat: int, proofs: list[int]) -> ApiKey:
        key = ApiKey(
            key_hash=KEY_HASH,
            balance=Msat(balance_msat),
            reserved=Msat(0),
            total_spent=Msat(0),
            total_requests=0,
            created_at=self.clock.now(),
            refund_mint_url=MINT,
            refund_unit="sat",
        )
        self.ledger.keys[KEY_HASH] = key
        self.ledger.entries.append(LedgerEntry(KEY_HASH, "deposit", balance_msat, "redeem:seed", self.clock.now()))
        for amount in proofs:
            self.wallet.add_proofs(MINT, "sat", self.mint.issue(MINT, amount).proofs)
        return key

    async def audit(self) -> None:
        assert await InMemoryLedgerAudit(self.ledger).violations() == []
        owed = sum(k.balance.value for k in self.ledger.keys.values())
        assert owed <= self.proofs.value(MINT, "sat") * 1000


@pytest.fixture
def env() -> Env:
    ledger = InMemoryLedger()
    proofs = ProofStore()
    redemptions = InMemoryRedemptions(ledger, proofs)
    wallet = InMemoryWallet(ledger, proofs)
    mint = GatedMint()
    clock = FixedClock()
    codec = CashuTokenCodec()
    service = RedemptionService(
        codec=codec,
        mint=mint,
        redemptions=redemptions,
        ledger=ledger,
        clock=clock,
        policy=MintPolicy(trusted_mints=(MINT,), unit="sat"),
        timeout_seconds=TIMEOUT,
    )
    ids = iter(f"refund{i}" for i in range(100))
    refunds = RefundService(wallet=wallet, mint=mint, codec=codec, clock=clock, new_id=lambda: next(ids))
    reconciler = ReconcilerService(
        mint=mint, redemptions=redemptions, wallet=wallet, clock=clock, timeout_seconds=TIMEOUT
    )
    return Env(mint, ledger, proofs, redemptions, wallet, clock, service, refunds, reconciler, codec)


# -- the restarted-redemption race (review defect 1) -----------------------------------------------------------------
async def test_redeem_credits_once_when_a_restarted_attempt_races_the_live_first_attempt(env: Env) -> None:
    token = env.token(64)
    key_hash = token_key_hash(token)
    env.mint.gate_first_swap = True
    first = asyncio.create_task(env.service.redeem(token, key_hash=key_hash))
    await env.mint.in_swap.wait()  # A claimed, persisted its outputs and is inside swap
    env.clock.advance(STALE)  # A's claim now looks stale
    second = asyncio.create_task(env.service.redeem(token, key_hash=key_hash))
    await asyncio.sleep(0)
    env.mint.may_send.set()  # A lands first; B then gets 11001 for the same inputs

    second_result = await second
    env.mint.may_return.set()
    first_result = await first

    assert env.ledger.keys[key_hash].balance == Msat(64_000)
    assert (first_result.credited, second_result.credited) == (Msat(64_000), Msat(64_000))
    assert env.entries("deposit") == [64_000]
    assert env.redemptions.rows[env.token_hash(token)].state is RedemptionState.CREDITED
    assert env.proofs.value(MINT, "sat") == 64
    await env.audit()


async def test_redeem_takes_the_row_over_when_it_was_aborted_while_its_swap_was_in_flight(env: Env) -> None:
    token = env.token(64)
    key_hash = token_key_hash(token)
    env.mint.gate_first_swap = True
    first = asyncio.create_task(env.service.redeem(token, key_hash=key_hash))
    await env.mint.in_swap.wait()
    env.clock.advance(STALE)
    report = await env.reconciler.run_once()  # checkstate: still unspent -> aborted under a new attempt
    assert report.count(Outcome.ABORTED) == 1
    # ...and a later attempt detached the first attempt's outputs by persisting its own
    fresh = await env.mint.prepare_outputs(MINT, "sat", 64)
    await env.redemptions.persist_outputs(env.token_hash(token), MINT, "sat", fresh, env.clock.now())

    env.mint.may_send.set()
    env.mint.may_return.set()
    redeemed = await first  # the swap landed: its signatures must be credited, not dropped

    assert redeemed.credited == Msat(64_000)
    assert env.redemptions.rows[env.token_hash(token)].state is RedemptionState.CREDITED
    assert env.entries("deposit") == [64_000]
    assert env.proofs.value(MINT, "sat") == 64
    await env.audit()


# -- stale redemptions -----------------------------------------------------------------------------------------------
async def _stuck_redemption(env: Env, token: str, *, landed: bool) -> None:
    """A redemption left `pending`: the swap reply is lost (or the request dropped) and checkstate is down."""
    if landed:
        env.mint.lose_swap_replies = 1
    else:
        env.mint.drop_swap_requests = 1
    env.mint.fail_next["check_state"] = MintUnreachableError("down")
    with pytest.raises(RedemptionPendingError):
        await env.service.redeem(token, key_hash=token_key_hash(token))
    assert env.redemptions.rows[env.token_hash(token)].state is RedemptionState.PENDING


async def test_reconciler_credits_a_stale_redemption_whose_swap_landed(env: Env) -> None:
    token = env.token(64)
    await _stuck_redemption(env, token, landed=True)
    env.clock.advance(STALE)

    report = await env.reconciler.run_once()
    again = await env.reconciler.run_once()

    assert report.count(Outcome.CREDITED) == 1
    assert again.total == 0
    assert env.ledger.keys[token_key_hash(token)].balance == Msat(64_000)
    assert env.entries("deposit") == [64_000]
    redeemed = await env.service.redeem(token, key_hash=token_key_hash(token))  # the client's retry: same credit
    assert redeemed.credited == Msat(64_000)
    await env.audit()


async def test_reconciler_aborts_a_stale_redemption_whose_swap_never_happened(env: Env) -> None:
    token = env.token(64)
    await _stuck_redemption(env, token, landed=False)
    env.clock.advance(STALE)

    report = await env.reconciler.run_once()

    assert report.count(Outcome.ABORTED) == 1
    assert env.redemptions.rows[env.token_hash(token)].state is RedemptionState.ABORTED
    assert env.entries("deposit") == []
    redeemed = await env.service.redeem(token, key_hash=token_key_hash(token))  # the token is still good
    assert redeemed.credited == Msat(64_000)
    await env.audit()


async def test_reconciler_fails_a_stale_redemption_whose_token_was_spent_elsewhere(env: Env) -> None:
    token = env.token(64)
    await _stuck_redemption(env, token, landed=False)
    outputs = await env.mint.prepare_outputs(MINT, "sat", 64)
    await env.mint.swap(MINT, env.codec.decode_token(token).proofs, outputs)  # the sender spent it meanwhile
    env.clock.advance(STALE)

    report = await env.reconciler.run_once()

    assert report.count(Outcome.FAILED) == 1
    assert env.redemptions.rows[env.token_hash(token)].state is RedemptionState.FAILED
    assert env.entries("deposit") == []


async def test_reconciler_leaves_a_stale_redemption_pending_while_checkstate_is_unreachable(env: Env) -> None:
    token = env.token(64)
    await _stuck_redemption(env, token, landed=True)
    env.clock.advance(STALE)
    env.mint.fail_next["check_state"] = MintUnreachableError("down")

    report = await env.reconciler.run_once()

    assert report.count(Outcome.LEFT) == 1
    assert env.redemptions.rows[env.token_hash(token)].state is RedemptionState.PENDING
    assert env.entries("deposit") == []


async def test_reconciler_ignores_redemptions_younger_than_twice_the_mint_timeout(env: Env) -> None:
    token = env.token(64)
    await _stuck_redemption(env, token, landed=True)
    env.clock.advance(2 * TIMEOUT - 1)

    report = await env.reconciler.run_once()

    assert report.total == 0
    assert env.mint.count("check_state") == 1  # the redemption's own check only


# -- unsettled sends -------------------------------------------------------------------------------------------------
async def _stuck_send(env: Env, *, landed: bool) -> None:
    key = env.fund(5_000, [8])
    if landed:
        env.mint.lose_swap_replies = 1
    else:
        env.mint.drop_swap_requests = 1
    env.mint.fail_next["check_state"] = MintUnreachableError("down")
    with pytest.raises(MintUnreachableError):
        await env.refunds.refund(key)
    assert env.wallet.refunds["refund0"].state is RefundState.AMBIGUOUS
    assert env.ledger.keys[KEY_HASH].balance == Msat(0)


async def test_reconciler_issues_an_ambiguous_send_whose_swap_landed_and_the_refund_returns_it(env: Env) -> None:
    await _stuck_send(env, landed=True)
    with pytest.raises(RequestInProgressError):
        await env.refunds.refund(env.ledger.keys[KEY_HASH])
    env.clock.advance(STALE)

    report = await env.reconciler.run_once()
    again = await env.reconciler.run_once()

    assert report.count(Outcome.ISSUED) == 1
    assert again.total == 0
    assert env.wallet.refunds["refund0"].state is RefundState.ISSUED
    refund = await env.refunds.refund(env.ledger.keys[KEY_HASH])  # nothing available: the issued token again
    assert (refund.repeated, env.codec.decode_token(refund.token).amount) == (True, 5)
    assert env.proofs.value(MINT, "sat") == 3  # the change is back in the wallet
    assert env.entries("refund_reversal") == []
    await env.audit()


async def test_reconciler_reverses_an_ambiguous_send_whose_swap_never_happened(env: Env) -> None:
    await _stuck_send(env, landed=False)
    env.clock.advance(STALE)

    report = await env.reconciler.run_once()
    again = await env.reconciler.run_once()

    assert report.count(Outcome.REVERSED) == 1
    assert again.total == 0
    assert env.wallet.refunds["refund0"].state is RefundState.FAILED
    assert env.entries("refund_reversal") == [5_000]
    assert env.ledger.keys[KEY_HASH].balance == Msat(5_000)
    assert [r.state for r in env.proofs.rows if r.c] == [WalletProofState.UNSPENT]
    await env.audit()


async def test_reconciler_reverses_a_pending_send_of_a_process_that_died_after_reserving(env: Env) -> None:
    key = env.fund(5_000, [8])
    request = SendRequest(
        refund_id="dead",
        key_hash=KEY_HASH,
        mint_url=MINT,
        unit="sat",
        amount=5,
        rounding=Msat(0),
        expected_balance=key.balance,
        now=env.clock.now(),
    )
    await env.wallet.reserve_send(request)  # ...and the process dies before the swap
    assert env.wallet.refunds["dead"].state is RefundState.PENDING
    env.clock.advance(STALE)

    report = await env.reconciler.run_once()

    assert report.count(Outcome.REVERSED) == 1
    assert env.ledger.keys[KEY_HASH].balance == Msat(5_000)
    await env.audit()


async def test_reconciler_leaves_an_ambiguous_send_while_checkstate_is_unreachable(env: Env) -> None:
    await _stuck_send(env, landed=True)
    env.clock.advance(STALE)
    env.mint.fail_next["check_state"] = MintUnreachableError("down")

    report = await env.reconciler.run_once()

    assert report.count(Outcome.LEFT) == 1
    assert env.wallet.refunds["refund0"].state is RefundState.AMBIGUOUS


# -- X-Cashu change whose issuing outcome is unknown (review defect 2) -----------------------------------------------
@pytest.mark.parametrize("knob", ["drop_swap_requests", "lose_swap_replies"])
async def test_x_cashu_refund_is_in_progress_then_pays_pending_change_after_reconciliation(knob: str) -> None:
    x = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    token = x.token(64)
    await x.redemption.redeem(token, key_hash=token_key_hash(token))  # credited first: the next swap is change's
    setattr(x.mint, knob, 1)
    x.mint.fail_next["check_state"] = MintUnreachableError("down")
    reply = await x.service.handle(x.request(_chat(), x_cashu=token))
    owed = int(reply.headers["x-routstr-change-pending"])
    assert owed > 0
    assert x.ledger.keys[token_key_hash(token)].balance < Msat(owed * 1000)  # debited: the change is in flight

    with pytest.raises(RequestInProgressError) as raised:  # was 410 change_unavailable
        await x.service.refund(token)
    assert raised.value.retry_after_seconds == 2

    x.clock.advance(STALE)
    reconciler = ReconcilerService(
        mint=x.mint, redemptions=x.redemptions, wallet=x.wallet, clock=x.clock, timeout_seconds=TIMEOUT
    )
    report = await reconciler.run_once()
    assert report.count(Outcome.ISSUED if knob == "lose_swap_replies" else Outcome.REVERSED) == 1

    refunded = await x.service.refund(token)
    assert refunded.amount == owed
    assert await InMemoryLedgerAudit(x.ledger).violations() == []


async def test_refund_hands_nothing_out_when_the_reconciler_reversed_it_before_its_slow_swap_landed(env: Env) -> None:
    key = env.fund(5_000, [8])
    env.mint.gate_first_swap = True
    live = asyncio.create_task(env.refunds.refund(key))
    await env.mint.in_swap.wait()  # the swap is stuck before reaching the mint (backoff, semaphore)
    env.clock.advance(STALE)
    report = await env.reconciler.run_once()  # inputs still unspent at the mint: the debit is given back
    assert report.count(Outcome.REVERSED) == 1

    env.mint.may_send.set()  # ...then the swap lands after all
    env.mint.may_return.set()
    with pytest.raises(MintUnreachableError):
        await live

    assert env.wallet.refunds["refund0"].state is RefundState.FAILED
    assert env.ledger.keys[KEY_HASH].balance == Msat(5_000)
    assert env.entries("refund_reversal") == [5_000]
    assert env.proofs.value(MINT, "sat") == 8  # the swap's outputs are node money; the spent input is not
    assert {r.state for r in env.proofs.rows if r.op_id == "refund:refund0"} == {
        WalletProofState.SPENT,
        WalletProofState.UNSPENT,
    }
    await env.audit()
