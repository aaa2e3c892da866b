"""The Ledger contract: one test set against InMemoryLedger, SqlLedger on SQLite and SqlLedger on PostgreSQL."""

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from app.adapters.sql import SqlDatabase, SqlLedger, SqlLedgerAudit
from app.domain.accounts import (
    ApiKey,
    LimitReset,
    NewApiKey,
    NewChildKey,
    Reservation,
    ReservationRequest,
    ReservationStatus,
)
from app.domain.errors import (
    BalanceLimitExceededError,
    InsufficientBalanceError,
    InvalidApiKeyError,
    KeyExpiredError,
    NotParentKeyError,
    ReservationNotFoundError,
    ReservationStateError,
)
from app.domain.money import Msat
from app.domain.ports import Ledger, LedgerAudit
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@dataclass
class Backend:
    name: str
    ledger: Ledger
    audit: LedgerAudit
    second_engine: Callable[[], Awaitable[Ledger]]
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


async def _sql_backend(name: str, url: str) -> Backend:
    database = SqlDatabase.create(url)
    closers: list[Callable[[], Awaitable[None]]] = [database.dispose]

    async def second_engine() -> Ledger:
        other = SqlDatabase.create(url)
        closers.append(other.dispose)
        return SqlLedger(other)

    return Backend(name, SqlLedger(database), SqlLedgerAudit(database), second_engine, closers)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        fake = InMemoryLedger()

        async def same() -> Ledger:
            return fake

        yield Backend("memory", fake, InMemoryLedgerAudit(fake), same)
        return
    url_fixture = "sqlite_database_url" if request.param == "sqlite" else "postgres_database_url"
    url: str = request.getfixturevalue(url_fixture)
    built = await _sql_backend(request.param, url)
    try:
        yield built
    finally:
        for close in built.closers:
            await close()


def _hash() -> str:
    return secrets.token_hex(32)


async def _key(ledger: Ledger, grant: int = 10_000, **kwargs: object) -> ApiKey:
    new = NewApiKey(key_hash=_hash(), grant=Msat(grant), created_at=NOW, **kwargs)  # type: ignore[arg-type]
    return await ledger.create_key(new)


def _request(key: ApiKey, amount: int, *, now: datetime = NOW, request_id: str | None = None) -> ReservationRequest:
    return ReservationRequest(
        request_id=request_id or secrets.token_hex(16),
        key_hash=key.key_hash,
        amount=Msat(amount),
        now=now,
        lease_expires_at=now + LEASE,
        model="gpt-test",
        provider_id="echo",
    )


async def _balance(ledger: Ledger, key: ApiKey) -> tuple[int, int]:
    stored = await ledger.get_key(key.key_hash)
    assert stored is not None
    return stored.balance.value, stored.reserved.value


# -- keys ------------------------------------------------------------------------------------------------------------
async def test_create_key_journals_grant(backend: Backend) -> None:
    key = await _key(backend.ledger, 21_000)

    entries = await backend.ledger.entries_for_key(key.key_hash)

    assert key.balance == Msat(21_000)
    assert key.reserved == Msat(0)
    assert [(e.kind, e.amount_msat, e.idempotency_key) for e in entries] == [("grant", 21_000, f"grant:{key.key_hash}")]
    assert await backend.audit.violations() == []


async def test_create_key_returns_stored_key_without_second_grant_when_hash_exists(backend: Backend) -> None:
    key = await _key(backend.ledger, 5_000)

    again = await backend.ledger.create_key(NewApiKey(key_hash=key.key_hash, grant=Msat(9_999), created_at=NOW))

    assert again.balance == Msat(5_000)
    assert len(await backend.ledger.entries_for_key(key.key_hash)) == 1


async def test_get_key_returns_none_when_unknown(backend: Backend) -> None:
    assert await backend.ledger.get_key(_hash()) is None


async def test_create_key_stores_expiry_refund_address_and_limit(backend: Backend) -> None:
    expires = NOW + timedelta(days=3)

    key = await _key(
        backend.ledger,
        expires_at=expires,
        refund_address="user@example.com",
        balance_limit=Msat(500),
        balance_limit_reset=LimitReset.DAILY,
    )
    stored = await backend.ledger.get_key(key.key_hash)

    assert stored == key
    assert stored.expires_at == expires
    assert stored.refund_address == "user@example.com"
    assert stored.balance_limit == Msat(500)
    assert stored.limit_reset_at == datetime(2026, 5, 5, tzinfo=UTC)


async def test_list_keys_returns_oldest_first(backend: Backend) -> None:
    first = await backend.ledger.create_key(
        NewApiKey(key_hash="0" * 63 + "1", grant=Msat(1), created_at=datetime(2000, 1, 1, tzinfo=UTC))
    )
    second = await backend.ledger.create_key(
        NewApiKey(key_hash="0" * 63 + "2", grant=Msat(2), created_at=datetime(2000, 1, 2, tzinfo=UTC))
    )

    listed = await backend.ledger.list_keys(limit=2)

    assert [k.key_hash for k in listed] == [first.key_hash, second.key_hash]


# -- reserve ---------------------------------------------------------------------------------------------------------
async def test_reserve_holds_amount_and_inserts_active_reservation(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)

    reservation = await backend.ledger.reserve(_request(key, 3_000))

    assert reservation.status is ReservationStatus.ACTIVE
    assert reservation.amount == Msat(3_000)
    assert reservation.billing_key_hash == key.key_hash
    assert await backend.ledger.get_reservation(reservation.request_id) == reservation
    assert await _balance(backend.ledger, key) == (10_000, 3_000)


async def test_reserve_returns_stored_reservation_when_request_id_repeats(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    first = await backend.ledger.reserve(_request(key, 3_000, request_id="req-repeat-" + secrets.token_hex(4)))

    again = await backend.ledger.reserve(_request(key, 5_000, request_id=first.request_id))

    assert again == first
    assert await _balance(backend.ledger, key) == (10_000, 3_000)


async def test_reserve_raises_insufficient_balance_with_details_when_available_is_short(backend: Backend) -> None:
    key = await _key(backend.ledger, 1_000)
    await backend.ledger.reserve(_request(key, 400))
    request = _request(key, 601)

    with pytest.raises(InsufficientBalanceError) as raised:
        await backend.ledger.reserve(request)

    assert raised.value.details == {"required_msat": 601, "available_msat": 600}
    assert await backend.ledger.get_reservation(request.request_id) is None
    assert await _balance(backend.ledger, key) == (1_000, 400)


async def test_reserve_raises_key_expired_when_key_expired(backend: Backend) -> None:
    key = await _key(backend.ledger, 1_000, expires_at=NOW - timedelta(seconds=1))

    with pytest.raises(KeyExpiredError):
        await backend.ledger.reserve(_request(key, 10))

    assert await _balance(backend.ledger, key) == (1_000, 0)


async def test_reserve_raises_invalid_api_key_when_key_unknown(backend: Backend) -> None:
    ghost = ApiKey(
        key_hash=_hash(), balance=Msat(0), reserved=Msat(0), total_spent=Msat(0), total_requests=0, created_at=NOW
    )

    with pytest.raises(InvalidApiKeyError):
        await backend.ledger.reserve(_request(ghost, 10))


async def test_reserve_raises_balance_limit_exceeded_when_limit_would_be_passed(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000, balance_limit=Msat(1_000), balance_limit_reset=LimitReset.DAILY)
    await backend.ledger.reserve(_request(key, 700))

    with pytest.raises(BalanceLimitExceededError):
        await backend.ledger.reserve(_request(key, 301))

    assert await _balance(backend.ledger, key) == (10_000, 700)


async def test_reserve_resets_limit_when_reset_boundary_passed(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000, balance_limit=Msat(1_000), balance_limit_reset=LimitReset.DAILY)
    first = await backend.ledger.reserve(_request(key, 900))
    await backend.ledger.settle(first.request_id, Msat(900), NOW)
    tomorrow = NOW + timedelta(days=1)

    await backend.ledger.reserve(_request(key, 900, now=tomorrow))
    stored = await backend.ledger.get_key(key.key_hash)

    assert stored is not None
    assert stored.limit_used == Msat(900)
    assert stored.limit_reset_at == datetime(2026, 5, 6, tzinfo=UTC)


# -- resize ----------------------------------------------------------------------------------------------------------
async def test_resize_grows_the_hold_in_place_and_the_charge_keeps_the_request_id(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    reservation = await backend.ledger.reserve(_request(key, 3_000))

    resized = await backend.ledger.resize(reservation.request_id, Msat(5_000), NOW)

    assert (resized.request_id, resized.amount, resized.status) == (
        reservation.request_id,
        Msat(5_000),
        ReservationStatus.ACTIVE,
    )
    assert await backend.ledger.get_reservation(reservation.request_id) == resized
    assert await _balance(backend.ledger, key) == (10_000, 5_000)
    await backend.ledger.settle(reservation.request_id, Msat(4_500), NOW)
    assert await _balance(backend.ledger, key) == (5_500, 0)
    entries = await backend.ledger.entries_for_key(key.key_hash)
    assert [(e.kind, e.amount_msat, e.request_id) for e in entries][1:] == [("charge", -4_500, reservation.request_id)]
    assert await backend.audit.violations() == []


async def test_resize_raises_insufficient_balance_and_leaves_the_hold_unchanged(backend: Backend) -> None:
    key = await _key(backend.ledger, 1_000)
    reservation = await backend.ledger.reserve(_request(key, 400))
    await backend.ledger.reserve(_request(key, 300))

    with pytest.raises(InsufficientBalanceError) as raised:
        await backend.ledger.resize(reservation.request_id, Msat(801), NOW)

    assert raised.value.details == {"required_msat": 401, "available_msat": 300}
    stored = await backend.ledger.get_reservation(reservation.request_id)
    assert stored is not None
    assert (stored.amount, stored.status) == (Msat(400), ReservationStatus.ACTIVE)
    assert await _balance(backend.ledger, key) == (1_000, 700)
    assert await backend.audit.violations() == []


async def test_resize_keeps_the_bigger_hold_when_the_amount_is_not_above_it(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    reservation = await backend.ledger.reserve(_request(key, 3_000))

    resized = await backend.ledger.resize(reservation.request_id, Msat(1_000), NOW)

    assert resized.amount == Msat(3_000)
    assert await _balance(backend.ledger, key) == (10_000, 3_000)


async def test_resize_raises_key_expired_and_leaves_the_hold_unchanged_when_the_key_expired(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000, expires_at=NOW + timedelta(seconds=10))
    reservation = await backend.ledger.reserve(_request(key, 3_000))

    with pytest.raises(KeyExpiredError):
        await backend.ledger.resize(reservation.request_id, Msat(4_000), NOW + timedelta(seconds=11))

    assert await _balance(backend.ledger, key) == (10_000, 3_000)


async def test_resize_raises_state_error_when_released_and_not_found_when_unknown(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    reservation = await backend.ledger.reserve(_request(key, 3_000))
    await backend.ledger.release(reservation.request_id, NOW)

    with pytest.raises(ReservationStateError):
        await backend.ledger.resize(reservation.request_id, Msat(4_000), NOW)
    with pytest.raises(ReservationNotFoundError):
        await backend.ledger.resize("no-such-request", Msat(4_000), NOW)

    assert await _balance(backend.ledger, key) == (10_000, 0)


async def test_resize_of_a_child_grows_its_limit_used_and_the_parent_hold(backend: Backend) -> None:
    parent = await _key(backend.ledger, 10_000)
    child = await _child(backend, parent, balance_limit=Msat(5_000))
    reservation = await backend.ledger.reserve(_request(child, 2_000))

    await backend.ledger.resize(reservation.request_id, Msat(3_000), NOW)
    await backend.ledger.settle(reservation.request_id, Msat(2_500), NOW)

    assert await _balance(backend.ledger, parent) == (7_500, 0)
    stored = await backend.ledger.get_key(child.key_hash)
    assert stored is not None
    assert stored.limit_used == Msat(2_500)
    assert await backend.audit.violations() == []


async def test_resize_raises_balance_limit_exceeded_for_a_child_and_leaves_the_hold_unchanged(
    backend: Backend,
) -> None:
    parent = await _key(backend.ledger, 10_000)
    child = await _child(backend, parent, balance_limit=Msat(1_000))
    reservation = await backend.ledger.reserve(_request(child, 800))

    with pytest.raises(BalanceLimitExceededError):
        await backend.ledger.resize(reservation.request_id, Msat(1_001), NOW)

    stored = await backend.ledger.get_reservation(reservation.request_id)
    assert stored is not None
    assert stored.amount == Msat(800)
    assert await _balance(backend.ledger, parent) == (10_000, 800)
    held_child = await backend.ledger.get_key(child.key_hash)
    assert held_child is not None
    assert held_child.limit_used == Msat(800)
    assert await backend.audit.violations() == []


# -- settle ----------------------------------------------------------------------------------------------------------
async def test_settle_charges_once_and_journals_charge(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    reservation = await backend.ledger.reserve(_request(key, 3_000))

    settlement = await backend.ledger.settle(reservation.request_id, Msat(2_500), NOW)

    assert (settlement.collected, settlement.shortfall, settlement.balance_after) == (Msat(2_500), Msat(0), Msat(7_500))
    assert await _balance(backend.ledger, key) == (7_500, 0)
    stored = await backend.ledger.get_reservation(reservation.request_id)
    assert stored is not None
    assert (stored.status, stored.charged, stored.settled_at) == (ReservationStatus.CHARGED, Msat(2_500), NOW)
    entries = await backend.ledger.entries_for_key(key.key_hash)
    assert [(e.kind, e.amount_msat, e.idempotency_key, e.request_id) for e in entries][1:] == [
        ("charge", -2_500, f"charge:{reservation.request_id}", reservation.request_id)
    ]
    after = await backend.ledger.get_key(key.key_hash)
    assert after is not None
    assert (after.total_spent, after.total_requests) == (Msat(2_500), 1)
    assert await backend.audit.violations() == []


async def test_settle_returns_first_settlement_when_repeated(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    reservation = await backend.ledger.reserve(_request(key, 3_000))
    first = await backend.ledger.settle(reservation.request_id, Msat(2_000), NOW)

    again = await backend.ledger.settle(reservation.request_id, Msat(2_900), NOW + timedelta(seconds=5))

    assert again == first
    assert await _balance(backend.ledger, key) == (8_000, 0)
    assert [e.kind for e in await backend.ledger.entries_for_key(key.key_hash)] == ["grant", "charge"]


async def test_settle_charges_once_when_settled_concurrently(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    reservation = await backend.ledger.reserve(_request(key, 3_000))

    results = await asyncio.gather(*(backend.ledger.settle(reservation.request_id, Msat(1_000), NOW) for _ in range(8)))

    assert len(set(results)) == 1
    assert await _balance(backend.ledger, key) == (9_000, 0)


async def test_settle_collects_overrun_from_free_balance_without_touching_other_holds(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    other = await backend.ledger.reserve(_request(key, 4_000))
    reservation = await backend.ledger.reserve(_request(key, 1_000))

    settlement = await backend.ledger.settle(reservation.request_id, Msat(20_000), NOW)

    assert (settlement.collected, settlement.shortfall) == (Msat(6_000), Msat(14_000))
    assert await _balance(backend.ledger, key) == (4_000, 4_000)
    assert (await backend.ledger.get_reservation(other.request_id)) == other


async def test_settle_journals_shortfall_when_charge_exceeds_balance(backend: Backend) -> None:
    key = await _key(backend.ledger, 1_000)
    reservation = await backend.ledger.reserve(_request(key, 1_000))

    settlement = await backend.ledger.settle(reservation.request_id, Msat(1_500), NOW)

    assert (settlement.requested, settlement.collected, settlement.shortfall) == (Msat(1_500), Msat(1_000), Msat(500))
    entries = await backend.ledger.entries_for_key(key.key_hash)
    assert [(e.kind, e.amount_msat, e.idempotency_key) for e in entries][1:] == [
        ("charge", -1_000, f"charge:{reservation.request_id}"),
        ("shortfall", 0, f"shortfall:{reservation.request_id}"),
    ]
    assert await _balance(backend.ledger, key) == (0, 0)
    assert await backend.ledger.settle(reservation.request_id, Msat(1_500), NOW) == settlement


async def test_settle_raises_not_found_when_reservation_unknown(backend: Backend) -> None:
    with pytest.raises(ReservationNotFoundError):
        await backend.ledger.settle("no-such-request", Msat(1), NOW)


# -- release, leases -------------------------------------------------------------------------------------------------
async def test_release_frees_hold_exactly_once(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    reservation = await backend.ledger.reserve(_request(key, 3_000))

    first = await backend.ledger.release(reservation.request_id, NOW)
    second = await backend.ledger.release(reservation.request_id, NOW)

    assert (first, second) == (True, False)
    assert await _balance(backend.ledger, key) == (10_000, 0)
    stored = await backend.ledger.get_reservation(reservation.request_id)
    assert stored is not None
    assert stored.status is ReservationStatus.RELEASED
    with pytest.raises(ReservationStateError):
        await backend.ledger.settle(reservation.request_id, Msat(1), NOW)


async def test_release_returns_false_when_already_charged(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    reservation = await backend.ledger.reserve(_request(key, 3_000))
    await backend.ledger.settle(reservation.request_id, Msat(3_000), NOW)

    assert await backend.ledger.release(reservation.request_id, NOW) is False
    assert await _balance(backend.ledger, key) == (7_000, 0)


async def test_release_gives_limit_back(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000, balance_limit=Msat(1_000))
    reservation = await backend.ledger.reserve(_request(key, 800))

    await backend.ledger.release(reservation.request_id, NOW)
    stored = await backend.ledger.get_key(key.key_hash)

    assert stored is not None
    assert stored.limit_used == Msat(0)


async def test_sweep_expires_passed_leases_then_late_settle_charges_capped_at_available(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    stale = await backend.ledger.reserve(_request(key, 3_000))
    later = NOW + LEASE + timedelta(seconds=1)
    live = await backend.ledger.reserve(_request(key, 6_000, now=later))

    swept = await backend.ledger.sweep_expired(later)
    again = await backend.ledger.sweep_expired(later)

    assert swept >= 1  # the PostgreSQL database is shared by the test run: other tests' holds may go too
    assert again == 0
    stored = await backend.ledger.get_reservation(stale.request_id)
    assert stored is not None
    assert stored.status is ReservationStatus.EXPIRED
    assert await _balance(backend.ledger, key) == (10_000, 6_000)
    assert await backend.ledger.release(stale.request_id, later) is False

    settlement = await backend.ledger.settle(stale.request_id, Msat(5_000), later)

    assert (settlement.collected, settlement.shortfall) == (Msat(4_000), Msat(1_000))
    assert await _balance(backend.ledger, key) == (6_000, 6_000)
    assert await backend.ledger.get_reservation(live.request_id) == live
    assert await backend.audit.violations() == []


async def test_renew_leases_keeps_active_reservations_from_the_sweeper(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000)
    renewed = await backend.ledger.reserve(_request(key, 1_000))
    released = await backend.ledger.reserve(_request(key, 1_000))
    await backend.ledger.release(released.request_id, NOW)
    later = NOW + LEASE + timedelta(seconds=1)

    count = await backend.ledger.renew_leases([renewed.request_id, released.request_id], later + LEASE)
    await backend.ledger.sweep_expired(later)

    assert count == 1
    stored = await backend.ledger.get_reservation(renewed.request_id)
    assert stored is not None
    assert (stored.status, stored.lease_expires_at) == (ReservationStatus.ACTIVE, later + LEASE)
    assert await backend.ledger.renew_leases([], later) == 0


async def test_reset_due_limits_zeroes_limit_used_after_boundary_only(backend: Backend) -> None:
    key = await _key(backend.ledger, 10_000, balance_limit=Msat(1_000), balance_limit_reset=LimitReset.WEEKLY)
    reservation = await backend.ledger.reserve(_request(key, 600))
    await backend.ledger.settle(reservation.request_id, Msat(600), NOW)
    monday = datetime(2026, 5, 11, tzinfo=UTC)  # NOW is Monday 2026-05-04 12:00; the boundary is a week later

    early = await backend.ledger.reset_due_limits(monday - timedelta(seconds=1))
    before = await backend.ledger.get_key(key.key_hash)
    due = await backend.ledger.reset_due_limits(monday)
    after = await backend.ledger.get_key(key.key_hash)

    assert before is not None
    assert after is not None
    assert before.limit_used == Msat(600)
    assert due >= 1  # the PostgreSQL database is shared by the test run
    assert (after.limit_used, after.limit_reset_at) == (Msat(0), datetime(2026, 5, 18, tzinfo=UTC))
    assert early == 0 or backend.name == "postgres"


# -- child keys ------------------------------------------------------------------------------------------------------
async def _child(backend: Backend, parent: ApiKey, fee: int = 0, **kwargs: object) -> ApiKey:
    child = NewChildKey(key_hash=_hash(), created_at=NOW, **kwargs)  # type: ignore[arg-type]
    [created] = await backend.ledger.create_child_keys(parent.key_hash, [child], Msat(fee), NOW)
    return created


async def test_create_child_keys_debits_and_journals_fee(backend: Backend) -> None:
    parent = await _key(backend.ledger, 10_000)
    children = [NewChildKey(key_hash=_hash(), created_at=NOW) for _ in range(3)]

    created = await backend.ledger.create_child_keys(parent.key_hash, children, Msat(500), NOW)

    assert [c.key_hash for c in created] == [c.key_hash for c in children]
    assert all(c.parent_key_hash == parent.key_hash and c.balance == Msat(0) for c in created)
    assert await _balance(backend.ledger, parent) == (8_500, 0)
    entries = await backend.ledger.entries_for_key(parent.key_hash)
    assert [(e.kind, e.amount_msat, e.idempotency_key) for e in entries][1:] == [
        ("child_key_fee", -1_500, f"child_key_fee:{children[0].key_hash}")
    ]
    assert await backend.audit.violations() == []


async def test_create_child_keys_raises_insufficient_balance_and_creates_nothing_when_fee_exceeds_available(
    backend: Backend,
) -> None:
    parent = await _key(backend.ledger, 1_000)
    await backend.ledger.reserve(_request(parent, 600))
    child = NewChildKey(key_hash=_hash(), created_at=NOW)

    with pytest.raises(InsufficientBalanceError) as raised:
        await backend.ledger.create_child_keys(parent.key_hash, [child], Msat(401), NOW)

    assert raised.value.details == {"required_msat": 401, "available_msat": 400}
    assert await backend.ledger.get_key(child.key_hash) is None
    assert await _balance(backend.ledger, parent) == (1_000, 600)


async def test_create_child_keys_raises_not_parent_key_when_parent_is_a_child(backend: Backend) -> None:
    parent = await _key(backend.ledger, 1_000)
    child = await _child(backend, parent)

    with pytest.raises(NotParentKeyError):
        await _child(backend, child)


async def test_child_reservation_holds_and_settles_on_parent_and_counts_on_child(backend: Backend) -> None:
    parent = await _key(backend.ledger, 10_000)
    child = await _child(backend, parent, balance_limit=Msat(5_000))

    reservation = await backend.ledger.reserve(_request(child, 2_000))
    held_child = await backend.ledger.get_key(child.key_hash)
    await backend.ledger.settle(reservation.request_id, Msat(1_500), NOW)

    assert (reservation.key_hash, reservation.billing_key_hash) == (child.key_hash, parent.key_hash)
    assert held_child is not None
    assert held_child.limit_used == Msat(2_000)
    assert await _balance(backend.ledger, parent) == (8_500, 0)
    settled_child = await backend.ledger.get_key(child.key_hash)
    assert settled_child is not None
    assert (settled_child.balance, settled_child.reserved) == (Msat(0), Msat(0))
    assert (settled_child.limit_used, settled_child.total_spent, settled_child.total_requests) == (
        Msat(1_500),
        Msat(1_500),
        1,
    )
    assert await backend.audit.violations() == []


async def test_child_reservation_raises_balance_limit_exceeded_and_holds_nothing(backend: Backend) -> None:
    parent = await _key(backend.ledger, 10_000)
    child = await _child(backend, parent, balance_limit=Msat(1_000))
    await backend.ledger.reserve(_request(child, 800))

    with pytest.raises(BalanceLimitExceededError):
        await backend.ledger.reserve(_request(child, 201))

    assert await _balance(backend.ledger, parent) == (10_000, 800)


async def test_child_reservation_raises_key_expired_when_child_expired(backend: Backend) -> None:
    parent = await _key(backend.ledger, 10_000)
    child = await _child(backend, parent, expires_at=NOW - timedelta(seconds=1))

    with pytest.raises(KeyExpiredError):
        await backend.ledger.reserve(_request(child, 10))


async def test_child_release_gives_limit_back(backend: Backend) -> None:
    parent = await _key(backend.ledger, 10_000)
    child = await _child(backend, parent)
    reservation = await backend.ledger.reserve(_request(child, 700))

    await backend.ledger.release(reservation.request_id, NOW)
    stored = await backend.ledger.get_key(child.key_hash)

    assert stored is not None
    assert stored.limit_used == Msat(0)
    assert await _balance(backend.ledger, parent) == (10_000, 0)


# -- concurrency -----------------------------------------------------------------------------------------------------
async def test_concurrent_reservations_from_two_engines_never_exceed_balance(backend: Backend) -> None:
    amount = 1_000
    key = await _key(backend.ledger, 73 * amount + 999)
    ledgers = [backend.ledger, await backend.second_engine()]

    async def attempt(i: int) -> Reservation | None:
        try:
            return await ledgers[i % 2].reserve(_request(key, amount))
        except InsufficientBalanceError:
            return None

    outcomes = await asyncio.gather(*(attempt(i) for i in range(200)))

    successes = [o for o in outcomes if o is not None]
    balance, reserved = await _balance(backend.ledger, key)
    assert reserved <= balance
    assert len(successes) * amount == reserved
    assert len(successes) == 73
    assert await backend.audit.violations() == []


async def test_settle_racing_sweeper_on_two_engines_charges_each_request_exactly_once(backend: Backend) -> None:
    key = await _key(backend.ledger, 100_000)
    reservations = [await backend.ledger.reserve(_request(key, 1_000)) for _ in range(30)]
    other = await backend.second_engine()
    later = NOW + LEASE + timedelta(seconds=1)

    async def settle(reservation: Reservation) -> None:
        await backend.ledger.settle(reservation.request_id, Msat(1_200), later)

    await asyncio.gather(*(settle(r) for r in reservations), other.sweep_expired(later), other.sweep_expired(later))

    for reservation in reservations:
        stored = await backend.ledger.get_reservation(reservation.request_id)
        assert stored is not None
        assert stored.status is ReservationStatus.CHARGED
        assert stored.charged == Msat(1_200)
    assert await _balance(backend.ledger, key) == (100_000 - 30 * 1_200, 0)
    assert await backend.audit.violations() == []


async def test_concurrent_child_settlements_on_two_engines_keep_limit_used_exact(backend: Backend) -> None:
    parent = await _key(backend.ledger, 100_000)
    child = await _child(backend, parent, balance_limit=Msat(50_000))
    reservations = [await backend.ledger.reserve(_request(child, 1_000)) for _ in range(20)]
    ledgers = [backend.ledger, await backend.second_engine()]

    await asyncio.gather(*(ledgers[i % 2].settle(r.request_id, Msat(700), NOW) for i, r in enumerate(reservations)))

    stored = await backend.ledger.get_key(child.key_hash)
    assert stored is not None
    assert (stored.limit_used, stored.total_spent, stored.total_requests) == (Msat(14_000), Msat(14_000), 20)
    assert await _balance(backend.ledger, parent) == (100_000 - 14_000, 0)
