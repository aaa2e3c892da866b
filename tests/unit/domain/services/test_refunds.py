"""RefundService on fakes: SPEC §9.1 Bearer refunds and the §7.3 send rules."""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from app.adapters.cashu.codec import CashuTokenCodec
from app.domain.accounts import ApiKey, LedgerEntry
from app.domain.cashu import PendingOutput, Proof
from app.domain.errors import (
    BalanceTooSmallError,
    ChildKeyRefundError,
    GrantNotRefundableError,
    MintError,
    MintUnreachableError,
    NoBalanceError,
    RefundConflictError,
    RequestInProgressError,
    TokenAlreadySpentError,
    TokenPendingError,
)
from app.domain.money import Msat
from app.domain.services.refunds import RefundService
from app.domain.wallet import RefundState, WalletProofState
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.mint import FakeMint
from tests.fakes.wallet import InMemoryWallet

MINT = "http://mint.test"
KEY_HASH = "k" * 64


@dataclass
class Env:
    service: RefundService
    wallet: InMemoryWallet
    mint: FakeMint
    ledger: InMemoryLedger
    clock: FixedClock
    codec: CashuTokenCodec

    def fund(self, balance_msat: int, proofs: list[int], **changes: object) -> ApiKey:
        """A token-funded key at MINT holding `balance_msat`, and wallet proofs of these amounts."""
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
        key = dataclasses.replace(key, **changes)  # type: ignore[arg-type]
        self.ledger.keys[KEY_HASH] = key
        self.ledger.entries.append(
            LedgerEntry(KEY_HASH, "deposit", balance_msat, f"redeem:{len(self.ledger.entries)}", self.clock.now())
        )
        for amount in proofs:
            self.wallet.add_proofs(MINT, "sat", self.mint.issue(MINT, amount).proofs)
        return key

    def kinds(self) -> list[tuple[str, int]]:
        return [(e.kind, e.amount_msat) for e in self.ledger.entries if e.kind != "deposit"]


@pytest.fixture
def env() -> Env:
    ledger = InMemoryLedger()
    wallet = InMemoryWallet(ledger)
    mint = FakeMint({MINT: 0})
    clock = FixedClock()
    codec = CashuTokenCodec()
    ids = iter(f"refund{i}" for i in range(100))
    service = RefundService(wallet=wallet, mint=mint, codec=codec, clock=clock, new_id=lambda: next(ids))
    return Env(service, wallet, mint, ledger, clock, codec)


async def _audit(env: Env) -> None:
    assert await InMemoryLedgerAudit(env.ledger).violations() == []
    owed = sum(k.balance.value for k in env.ledger.keys.values())
    assert owed <= env.wallet.proofs.value(MINT, "sat") * 1000


async def test_refund_sends_exact_proofs_without_swap(env: Env) -> None:
    key = env.fund(5_000, [4, 1])

    refund = await env.service.refund(key)

    token = env.codec.decode_token(refund.token)
    assert (refund.amount, token.amount, token.mint, token.unit) == (5, 5, MINT, "sat")
    assert env.mint.count("swap") == 0
    assert env.ledger.keys[KEY_HASH].balance == Msat(0)
    assert env.kinds() == [("refund", -5_000)]
    await _audit(env)


async def test_refund_swaps_into_amount_and_change_when_proofs_do_not_match(env: Env) -> None:
    key = env.fund(5_000, [8])

    refund = await env.service.refund(key)

    assert env.codec.decode_token(refund.token).amount == 5
    assert env.mint.count("swap") == 1
    assert env.wallet.proofs.value(MINT, "sat") == 3
    assert env.wallet.refunds["refund0"].state is RefundState.ISSUED
    await _audit(env)


async def test_refund_rounds_sat_down_and_journals_rounding(env: Env) -> None:
    key = env.fund(2_999, [2, 1])

    refund = await env.service.refund(key)

    assert refund.amount == 2
    assert env.kinds() == [("refund", -2_000), ("rounding", -999)]
    assert env.ledger.keys[KEY_HASH].balance == Msat(0)
    await _audit(env)


async def test_refund_repeated_with_nothing_available_returns_same_token(env: Env) -> None:
    key = env.fund(5_000, [4, 1])
    first = await env.service.refund(key)

    second = await env.service.refund(env.ledger.keys[KEY_HASH])

    assert second.token == first.token
    assert second.repeated
    assert env.wallet.refunds["refund0"].collected_at is not None
    assert env.kinds() == [("refund", -5_000)]


async def test_refund_without_any_balance_or_previous_refund_is_no_balance(env: Env) -> None:
    key = env.fund(0, [])

    with pytest.raises(NoBalanceError):
        await env.service.refund(key)


async def test_refund_below_one_sat_is_balance_too_small(env: Env) -> None:
    key = env.fund(999, [1])

    with pytest.raises(BalanceTooSmallError):
        await env.service.refund(key)

    assert env.ledger.keys[KEY_HASH].balance == Msat(999)


async def test_refund_with_requests_in_flight_is_conflict_with_retry_after(env: Env) -> None:
    key = env.fund(5_000, [4, 1], reserved=Msat(1_000))

    with pytest.raises(RefundConflictError) as raised:
        await env.service.refund(key)

    assert raised.value.retry_after_seconds == 2
    assert env.wallet.calls == []


async def test_refund_is_conflict_when_balance_moved_since_it_was_read(env: Env) -> None:
    key = env.fund(5_000, [4, 1])
    env.ledger.keys[KEY_HASH] = dataclasses.replace(key, balance=Msat(4_000))

    with pytest.raises(RefundConflictError):
        await env.service.refund(key)

    assert env.wallet.refunds == {}


async def test_refund_of_child_key_is_refused(env: Env) -> None:
    key = env.fund(5_000, [4, 1], parent_key_hash="p" * 64)

    with pytest.raises(ChildKeyRefundError):
        await env.service.refund(key)


async def test_refund_of_operator_grant_key_is_refused(env: Env) -> None:
    key = env.fund(5_000, [], refund_mint_url=None, refund_unit=None)

    with pytest.raises(GrantNotRefundableError):
        await env.service.refund(key)


async def test_refund_restores_balance_when_mint_refuses_swap(env: Env) -> None:
    key = env.fund(5_000, [8])
    env.mint.fail_next["swap"] = MintUnreachableError("down")

    with pytest.raises(MintUnreachableError):
        await env.service.refund(key)

    assert env.ledger.keys[KEY_HASH].balance == Msat(5_000)
    assert env.kinds() == [("refund", -5_000), ("refund_reversal", 5_000)]
    assert all(r.state is WalletProofState.UNSPENT for r in env.wallet.proofs.rows if r.c)
    assert env.wallet.refunds["refund0"].state is RefundState.FAILED
    await _audit(env)


async def test_refund_restores_balance_when_dropped_swap_left_inputs_unspent(env: Env) -> None:
    key = env.fund(5_000, [8])
    env.mint.drop_swap_requests = 1

    with pytest.raises(MintUnreachableError):
        await env.service.refund(key)

    assert env.ledger.keys[KEY_HASH].balance == Msat(5_000)
    assert env.mint.count("check_state") == 1


async def test_refund_recovers_token_by_restore_when_swap_reply_is_lost(env: Env) -> None:
    key = env.fund(5_000, [8])
    env.mint.lose_swap_replies = 1

    refund = await env.service.refund(key)

    assert env.codec.decode_token(refund.token).amount == 5
    assert env.mint.count("restore") == 1
    assert env.wallet.proofs.value(MINT, "sat") == 3
    await _audit(env)


async def test_refund_goes_ambiguous_when_outcome_cannot_be_checked(env: Env) -> None:
    key = env.fund(5_000, [8])
    env.mint.lose_swap_replies = 1
    env.mint.fail_next["check_state"] = MintUnreachableError("down")

    with pytest.raises(MintUnreachableError):
        await env.service.refund(key)

    assert env.wallet.refunds["refund0"].state is RefundState.AMBIGUOUS
    assert env.ledger.keys[KEY_HASH].balance == Msat(0)


async def test_refund_marks_own_inputs_spent_and_retries_with_other_proofs_when_the_mint_says_spent(env: Env) -> None:
    key = env.fund(5_000, [8, 8])
    env.mint.fail_next["swap"] = TokenAlreadySpentError("spent")  # 11001 on the node's own inputs

    refund = await env.service.refund(key)

    assert env.codec.decode_token(refund.token).amount == 5
    assert env.wallet.refunds["refund0"].state is RefundState.FAILED
    assert env.wallet.refunds["refund1"].state is RefundState.ISSUED
    spent_first = [r for r in env.wallet.proofs.rows if r.op_id == "refund:refund0"]
    assert [r.state for r in spent_first] == [WalletProofState.SPENT]  # never back to unspent
    assert env.kinds() == [("refund", -5_000), ("refund_reversal", 5_000), ("refund", -5_000)]
    assert env.ledger.keys[KEY_HASH].balance == Msat(0)
    await _audit(env)


async def test_refund_gives_the_balance_back_as_mint_error_when_the_retry_is_spent_too(env: Env) -> None:
    key = env.fund(5_000, [8, 8])
    real_swap = env.mint.swap
    calls = 0

    async def swap(mint_url: str, inputs: Sequence[Proof], outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            msg = "spent"
            raise TokenAlreadySpentError(msg)
        return await real_swap(mint_url, inputs, outputs)

    env.mint.swap = swap  # type: ignore[method-assign]

    with pytest.raises(MintError):
        await env.service.refund(key)

    assert calls == 2
    assert env.ledger.keys[KEY_HASH].balance == Msat(5_000)
    assert all(r.state is WalletProofState.SPENT for r in env.wallet.proofs.rows if r.c)
    assert {r.state for r in env.wallet.refunds.values()} == {RefundState.FAILED}
    assert env.kinds() == [
        ("refund", -5_000),
        ("refund_reversal", 5_000),
        ("refund", -5_000),
        ("refund_reversal", 5_000),
    ]


async def test_refund_goes_ambiguous_and_keeps_inputs_reserved_when_the_mint_says_pending(env: Env) -> None:
    key = env.fund(5_000, [8])
    env.mint.fail_next["swap"] = TokenPendingError("pending")  # 11002 on the node's own inputs

    with pytest.raises(MintUnreachableError):
        await env.service.refund(key)

    assert env.wallet.refunds["refund0"].state is RefundState.AMBIGUOUS
    assert [r.state for r in env.wallet.proofs.rows if r.c] == [WalletProofState.RESERVED]
    assert env.ledger.keys[KEY_HASH].balance == Msat(0)
    assert env.kinds() == [("refund", -5_000)]


async def test_refund_answers_request_in_progress_while_an_earlier_send_is_unsettled(env: Env) -> None:
    key = env.fund(5_000, [8])
    env.mint.lose_swap_replies = 1
    env.mint.fail_next["check_state"] = MintUnreachableError("down")
    with pytest.raises(MintUnreachableError):
        await env.service.refund(key)

    with pytest.raises(RequestInProgressError) as raised:
        await env.service.refund(env.ledger.keys[KEY_HASH])  # nothing available: not "no balance", not a stale token

    assert raised.value.retry_after_seconds == 2
    with pytest.raises(RequestInProgressError):
        await env.service.latest(KEY_HASH)
