"""The Wallet and Redemptions contracts: one test set against the in-memory fakes and the SQL adapters."""

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from app.adapters.sql import SqlDatabase, SqlLedger
from app.adapters.sql.redemptions import SqlRedemptions
from app.adapters.sql.wallet import SqlWallet
from app.domain.accounts import ApiKey, ReservationRequest
from app.domain.cashu import PendingOutput, Proof
from app.domain.errors import RedemptionPendingError, RefundConflictError, WalletShortError
from app.domain.money import Msat
from app.domain.ports import Ledger, Redemptions, Wallet
from app.domain.wallet import (
    NewRedemption,
    RedemptionCredit,
    RedemptionState,
    RefundState,
    SendRequest,
)
from tests.fakes.ledger import InMemoryLedger
from tests.fakes.wallet import InMemoryRedemptions, InMemoryWallet, ProofStore

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
KEYSET = "00ad268c4d1f5826"


@dataclass
class Backend:
    name: str
    ledger: Ledger
    wallet: Wallet
    redemptions: Redemptions
    second_wallet: Callable[[], Awaitable[Wallet]]
    mint: str = field(default_factory=lambda: f"http://mint-{secrets.token_hex(4)}.test")
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        ledger = InMemoryLedger()
        proofs = ProofStore()
        wallet = InMemoryWallet(ledger, proofs)

        async def same() -> Wallet:
            return wallet

        yield Backend("memory", ledger, wallet, InMemoryRedemptions(ledger, proofs), same)
        return
    url: str = request.getfixturevalue("sqlite_database_url" if request.param == "sqlite" else "postgres_database_url")
    database = SqlDatabase.create(url)
    closers: list[Callable[[], Awaitable[None]]] = [database.dispose]

    async def second() -> Wallet:
        other = SqlDatabase.create(url)
        closers.append(other.dispose)
        return SqlWallet(other)

    built = Backend(
        request.param, SqlLedger(database), SqlWallet(database), SqlRedemptions(database), second, closers=closers
    )
    try:
        yield built
    finally:
        for close in built.closers:
            await close()


def _outputs(amounts: list[int]) -> list[PendingOutput]:
    return [
        PendingOutput(
            amount=a,
            keyset_id=KEYSET,
            secret=secrets.token_hex(32),
            blinding_factor=secrets.token_hex(32),
            b_="02" + secrets.token_hex(32),
        )
        for a in amounts
    ]


def _signed(outputs: list[PendingOutput]) -> list[Proof]:
    return [
        Proof(amount=o.amount, keyset_id=o.keyset_id, secret=o.secret, c="03" + secrets.token_hex(32)) for o in outputs
    ]


def _claim(b: Backend, amount: int, *, token_hash: str | None = None, key_hash: str | None = None) -> NewRedemption:
    return NewRedemption(
        token_hash=token_hash or secrets.token_hex(32),
        key_hash=key_hash or secrets.token_hex(32),
        mint_url=b.mint,
        unit="sat",
        amount=amount,
        fee=0,
        input_ys=("02" + "ab" * 32,),
        now=NOW,
    )


async def _fund(b: Backend, amounts: list[int], key_hash: str | None = None) -> tuple[ApiKey, list[Proof]]:
    """A key credited through a full redemption whose proofs have exactly these amounts."""
    claim = _claim(b, sum(amounts), key_hash=key_hash)
    await b.redemptions.claim(claim)
    outputs = _outputs(amounts)
    await b.redemptions.persist_outputs(claim.token_hash, b.mint, "sat", outputs, NOW)
    proofs = _signed(outputs)
    credit = RedemptionCredit(claim.token_hash, claim.key_hash, b.mint, "sat", Msat(sum(amounts) * 1000), NOW)
    return await b.redemptions.credit(credit, proofs), proofs


def _send(b: Backend, key: ApiKey, amount: int, *, rounding: int = 0, expected: int | None = None) -> SendRequest:
    return SendRequest(
        refund_id=secrets.token_hex(16),
        key_hash=key.key_hash,
        mint_url=b.mint,
        unit="sat",
        amount=amount,
        rounding=Msat(rounding),
        expected_balance=Msat(key.balance.value if expected is None else expected),
        now=NOW,
    )


async def _kinds(b: Backend, key_hash: str) -> list[tuple[str, int]]:
    return [(e.kind, e.amount_msat) for e in await b.ledger.entries_for_key(key_hash)]


# -- redemptions -----------------------------------------------------------------------------------------------------
async def test_claim_inserts_once_and_returns_the_stored_row_after(backend: Backend) -> None:
    claim = _claim(backend, 8)

    first, inserted = await backend.redemptions.claim(claim)
    second, again = await backend.redemptions.claim(_claim(backend, 99, token_hash=claim.token_hash))

    assert (inserted, again) == (True, False)
    assert second.state is RedemptionState.PENDING
    assert (second.amount, second.key_hash, second.input_ys) == (8, claim.key_hash, claim.input_ys)
    assert first == second


async def test_restart_is_a_cas_on_state_and_attempt_start(backend: Backend) -> None:
    claim = _claim(backend, 8)
    row, _ = await backend.redemptions.claim(claim)
    assert await backend.redemptions.finish(claim.token_hash, RedemptionState.ABORTED, "cashu_token_pending", NOW)
    aborted = await backend.redemptions.get(claim.token_hash)
    assert aborted is not None

    stale = await backend.redemptions.restart(claim.token_hash, row, "b" * 64, 1, NOW + timedelta(seconds=1))
    won = await backend.redemptions.restart(claim.token_hash, aborted, "b" * 64, 1, NOW + timedelta(seconds=1))
    lost = await backend.redemptions.restart(claim.token_hash, aborted, "c" * 64, 1, NOW + timedelta(seconds=2))

    assert (stale, won, lost) == (False, True, False)
    restarted = await backend.redemptions.get(claim.token_hash)
    assert restarted is not None
    assert (restarted.state, restarted.key_hash, restarted.fee) == (RedemptionState.PENDING, "b" * 64, 1)


async def test_finish_only_moves_pending_rows(backend: Backend) -> None:
    claim = _claim(backend, 8)
    await backend.redemptions.claim(claim)

    first = await backend.redemptions.finish(claim.token_hash, RedemptionState.FAILED, "spent", NOW)
    second = await backend.redemptions.finish(claim.token_hash, RedemptionState.ABORTED, "other", NOW)

    row = await backend.redemptions.get(claim.token_hash)
    assert (first, second) == (True, False)
    assert row is not None
    assert (row.state, row.error_code) == (RedemptionState.FAILED, "spent")


async def test_persisting_outputs_again_replaces_the_earlier_ones(backend: Backend) -> None:
    claim = _claim(backend, 3)
    await backend.redemptions.claim(claim)
    old, new = _outputs([2, 1]), _outputs([1, 2])

    await backend.redemptions.persist_outputs(claim.token_hash, backend.mint, "sat", old, NOW)
    await backend.redemptions.persist_outputs(claim.token_hash, backend.mint, "sat", new, NOW)

    assert list(await backend.redemptions.outputs(claim.token_hash)) == new


async def test_credit_creates_key_with_mint_unit_and_one_deposit_then_refuses_a_second(backend: Backend) -> None:
    key, _ = await _fund(backend, [4, 1])

    assert key.balance == Msat(5_000)
    assert (key.refund_mint_url, key.refund_unit) == (backend.mint, "sat")
    assert await _kinds(backend, key.key_hash) == [("deposit", 5_000)]
    assert await backend.wallet.balance(backend.mint, "sat") == 5
    claim = _claim(backend, 1)
    with pytest.raises(RedemptionPendingError):
        await backend.redemptions.credit(
            RedemptionCredit(claim.token_hash, key.key_hash, backend.mint, "sat", Msat(1_000), NOW), []
        )


async def test_credit_adds_to_an_existing_key(backend: Backend) -> None:
    key, _ = await _fund(backend, [4])

    topped, _ = await _fund(backend, [2], key_hash=key.key_hash)

    assert topped.balance == Msat(6_000)
    assert [k for k, _ in await _kinds(backend, key.key_hash)] == ["deposit", "deposit"]


# -- sends -----------------------------------------------------------------------------------------------------------
async def test_reserve_send_debits_journals_and_reserves_exact_proofs(backend: Backend) -> None:
    key, proofs = await _fund(backend, [4, 2, 1])

    record, inputs = await backend.wallet.reserve_send(_send(backend, key, 6, rounding=500, expected=7_000))

    assert record.state is RefundState.PENDING
    assert {p.secret for p in inputs} == {proofs[0].secret, proofs[1].secret}
    assert (await backend.ledger.get_key(key.key_hash)).balance == Msat(500)  # type: ignore[union-attr]
    assert await _kinds(backend, key.key_hash) == [("deposit", 7_000), ("refund", -6_000), ("rounding", -500)]
    assert await backend.wallet.balance(backend.mint, "sat") == 7  # reserved proofs still count


async def test_reserve_send_is_conflict_when_the_balance_moved(backend: Backend) -> None:
    key, _ = await _fund(backend, [4])

    with pytest.raises(RefundConflictError):
        await backend.wallet.reserve_send(_send(backend, key, 4, expected=3_000))

    assert await _kinds(backend, key.key_hash) == [("deposit", 4_000)]


async def test_reserve_send_writes_nothing_when_the_wallet_is_short(backend: Backend) -> None:
    key, _ = await _fund(backend, [4])
    ghost = await backend.ledger.get_key(key.key_hash)
    assert ghost is not None

    elsewhere = dataclasses.replace(_send(backend, key, 4), mint_url="http://empty.test")

    with pytest.raises(WalletShortError):
        await backend.wallet.reserve_send(elsewhere)

    assert (await backend.ledger.get_key(key.key_hash)) == ghost
    assert await _kinds(backend, key.key_hash) == [("deposit", 4_000)]


async def test_complete_send_as_is_then_latest_refund_rebuilds_the_sent_proofs(backend: Backend) -> None:
    key, proofs = await _fund(backend, [4, 1])
    record, inputs = await backend.wallet.reserve_send(_send(backend, key, 5))

    done = await backend.wallet.complete_send(record.id, inputs, (), 0, NOW)
    again = await backend.wallet.complete_send(record.id, inputs, (), 0, NOW)
    latest = await backend.wallet.latest_refund(key.key_hash, NOW + timedelta(seconds=5))

    assert done.state is again.state is RefundState.ISSUED
    assert latest is not None
    assert latest[0].id == record.id
    assert {p.secret for p in latest[1]} == {p.secret for p in proofs}
    assert {p.c for p in latest[1]} == {p.c for p in proofs}
    assert await backend.wallet.balance(backend.mint, "sat") == 0


async def test_complete_send_after_swap_keeps_change_unspent(backend: Backend) -> None:
    key, _ = await _fund(backend, [8])
    record, inputs = await backend.wallet.reserve_send(_send(backend, key, 5, expected=8_000))
    send_outputs, change_outputs = _outputs([4, 1]), _outputs([2, 1])
    await backend.wallet.persist_outputs(record.id, backend.mint, "sat", [*send_outputs, *change_outputs], NOW)

    await backend.wallet.complete_send(record.id, _signed(send_outputs), _signed(change_outputs), 0, NOW)

    latest = await backend.wallet.latest_refund(key.key_hash, NOW)
    assert latest is not None
    assert sorted(p.amount for p in latest[1]) == [1, 4]
    assert await backend.wallet.balance(backend.mint, "sat") == 3
    assert list(await backend.wallet.outputs(record.id)) == []
    assert inputs[0].amount == 8


async def test_cancel_send_gives_the_whole_debit_back_once(backend: Backend) -> None:
    key, _ = await _fund(backend, [8])
    record, _ = await backend.wallet.reserve_send(_send(backend, key, 7, rounding=999, expected=8_000))

    first = await backend.wallet.cancel_send(record.id, NOW)
    second = await backend.wallet.cancel_send(record.id, NOW)

    assert (first, second) == (True, False)
    assert (await backend.ledger.get_key(key.key_hash)).balance == Msat(8_000)  # type: ignore[union-attr]
    assert (await _kinds(backend, key.key_hash))[-1] == ("refund_reversal", 7_999)
    again, inputs = await backend.wallet.reserve_send(_send(backend, key, 8))
    assert inputs[0].amount == 8
    assert again.state is RefundState.PENDING


async def test_concurrent_sends_from_two_instances_never_pick_the_same_proof(backend: Backend) -> None:
    keys = [await _fund(backend, [1] * 6) for _ in range(4)]
    wallets = [backend.wallet, await backend.second_wallet()]

    results = await asyncio.gather(
        *(wallets[i % 2].reserve_send(_send(backend, key, 6)) for i, (key, _) in enumerate(keys)),
        return_exceptions=True,
    )

    picked = [p.secret for r in results if not isinstance(r, BaseException) for p in r[1]]
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert len(picked) == len(set(picked)) == 24


# -- attempt fencing and the reconciler's reads (SPEC §7.2, §7.4) ------------------------------------------------------
async def test_credit_and_finish_are_fenced_on_the_attempt(backend: Backend) -> None:
    claim = _claim(backend, 4)
    row, _ = await backend.redemptions.claim(claim)
    later = NOW + timedelta(seconds=61)
    assert await backend.redemptions.restart(claim.token_hash, row, claim.key_hash, 0, later)
    outputs = _outputs([4])
    await backend.redemptions.persist_outputs(claim.token_hash, backend.mint, "sat", outputs, later)
    credit = RedemptionCredit(
        claim.token_hash, claim.key_hash, backend.mint, "sat", Msat(4_000), later, attempt_started_at=NOW
    )

    with pytest.raises(RedemptionPendingError):
        await backend.redemptions.credit(credit, _signed(outputs))  # the replaced attempt
    old_finish = await backend.redemptions.finish(
        claim.token_hash, RedemptionState.FAILED, "spent", later, attempt_started_at=NOW
    )
    key = await backend.redemptions.credit(dataclasses.replace(credit, attempt_started_at=later), _signed(outputs))

    assert old_finish is False
    assert key.balance == Msat(4_000)
    assert await backend.wallet.balance(backend.mint, "sat") == 4


async def test_credit_keeps_signatures_of_outputs_a_later_attempt_detached(backend: Backend) -> None:
    claim = _claim(backend, 4)
    await backend.redemptions.claim(claim)
    first = _outputs([4])
    await backend.redemptions.persist_outputs(claim.token_hash, backend.mint, "sat", first, NOW)
    await backend.redemptions.persist_outputs(claim.token_hash, backend.mint, "sat", _outputs([4]), NOW)

    credit = RedemptionCredit(claim.token_hash, claim.key_hash, backend.mint, "sat", Msat(4_000), NOW)
    await backend.redemptions.credit(credit, _signed(first))  # the mint signed the first attempt's outputs

    assert await backend.wallet.balance(backend.mint, "sat") == 4
    assert list(await backend.redemptions.outputs(claim.token_hash)) == []


async def test_stale_lists_pending_redemptions_started_before_the_cutoff(backend: Backend) -> None:
    old, young, done = _claim(backend, 1), _claim(backend, 2), _claim(backend, 3)
    await backend.redemptions.claim(old)
    await backend.redemptions.claim(dataclasses.replace(young, now=NOW + timedelta(seconds=30)))
    await backend.redemptions.claim(done)
    await backend.redemptions.finish(done.token_hash, RedemptionState.ABORTED, "x", NOW)

    stale = await backend.redemptions.stale(NOW + timedelta(seconds=10))

    assert old.token_hash in {r.token_hash for r in stale}
    assert not {young.token_hash, done.token_hash} & {r.token_hash for r in stale}


async def test_unsettled_sends_are_listed_with_their_reserved_inputs_until_settled(backend: Backend) -> None:
    key, _ = await _fund(backend, [4, 2])
    record, inputs = await backend.wallet.reserve_send(_send(backend, key, 4))
    await backend.wallet.mark_ambiguous(record.id, NOW)

    listed = await backend.wallet.unsettled(NOW + timedelta(seconds=1))
    too_early = await backend.wallet.unsettled(NOW)
    reserved = await backend.wallet.send_inputs(record.id)
    in_flight = await backend.wallet.has_unsettled(key.key_hash)
    await backend.wallet.complete_send(record.id, inputs, (), 0, NOW)

    assert record.id in {r.id for r in listed}
    assert record.id not in {r.id for r in too_early}
    assert [p.secret for p in reserved] == [p.secret for p in inputs]
    assert in_flight is True
    assert await backend.wallet.has_unsettled(key.key_hash) is False
    assert record.id not in {r.id for r in await backend.wallet.unsettled(NOW + timedelta(seconds=1))}


async def test_cancel_send_with_spent_inputs_marks_them_spent_and_gives_the_debit_back(backend: Backend) -> None:
    key, _ = await _fund(backend, [4, 2])
    earner, _ = await _fund(backend, [8])  # the node earned 8 sat from another key: the wallet covers a loss of 4
    request_id = "req-" + secrets.token_hex(8)
    hold = ReservationRequest(request_id, earner.key_hash, Msat(8_000), NOW, NOW + timedelta(minutes=5))
    await backend.ledger.reserve(hold)
    await backend.ledger.settle(request_id, Msat(8_000), NOW)
    record, _ = await backend.wallet.reserve_send(_send(backend, key, 4))

    assert await backend.wallet.cancel_send(record.id, NOW, inputs_spent=True)

    assert (await backend.ledger.get_key(key.key_hash)).balance == Msat(6_000)  # type: ignore[union-attr]
    assert await _kinds(backend, key.key_hash) == [("deposit", 6_000), ("refund", -4_000), ("refund_reversal", 4_000)]
    assert await backend.wallet.balance(backend.mint, "sat") == 10  # the spent proof no longer counts
    assert await backend.wallet.send_inputs(record.id) == []


async def test_complete_send_of_a_reversed_send_keeps_a_late_swap_as_node_proofs_and_issues_nothing(
    backend: Backend,
) -> None:
    key, _ = await _fund(backend, [8])
    record, inputs = await backend.wallet.reserve_send(_send(backend, key, 5))
    outputs = _outputs([4, 1, 2, 1])
    await backend.wallet.persist_outputs(record.id, backend.mint, "sat", outputs, NOW)
    assert await backend.wallet.cancel_send(record.id, NOW)
    signed = _signed(outputs)

    after = await backend.wallet.complete_send(record.id, signed[:2], signed[2:], 0, NOW)

    assert after.state is RefundState.FAILED
    assert await backend.wallet.latest_refund(key.key_hash, NOW) is None
    assert await backend.wallet.balance(backend.mint, "sat") == 8  # outputs unspent, the spent input not counted
    assert (await backend.ledger.get_key(key.key_hash)).balance == Msat(8_000)  # type: ignore[union-attr]
    again, picked = await backend.wallet.reserve_send(_send(backend, key, 8, expected=8_000))
    assert inputs[0].secret not in {p.secret for p in picked}
    assert again.state is RefundState.PENDING


async def test_complete_send_as_is_of_a_reversed_send_leaves_its_inputs_unspent(backend: Backend) -> None:
    key, _ = await _fund(backend, [4])
    record, inputs = await backend.wallet.reserve_send(_send(backend, key, 4))
    assert await backend.wallet.cancel_send(record.id, NOW)

    after = await backend.wallet.complete_send(record.id, inputs, (), 0, NOW)

    assert after.state is RefundState.FAILED
    assert await backend.wallet.balance(backend.mint, "sat") == 4
    _, picked = await backend.wallet.reserve_send(_send(backend, key, 4))
    assert [p.secret for p in picked] == [inputs[0].secret]
