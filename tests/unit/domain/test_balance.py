"""Balance rules: the reservation state machine, reservation checks, settlement arithmetic and limit resets."""

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.accounts import ApiKey, LimitReset, ReservationStatus
from app.domain.balance import (
    can_transition,
    check_limit,
    check_reservable,
    limit_reset_due,
    limit_used_after_release,
    limit_used_after_settle,
    next_limit_reset,
    settlement_amounts,
    tracks_limit,
    transition,
)
from app.domain.errors import (
    BalanceLimitExceededError,
    InsufficientBalanceError,
    KeyExpiredError,
    ReservationStateError,
)
from app.domain.money import Msat

S = ReservationStatus
NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
amounts = st.integers(min_value=0, max_value=10**15)


def _key(balance: int = 10_000, reserved: int = 0, **kwargs: Any) -> ApiKey:
    return ApiKey(
        key_hash="a" * 64,
        balance=Msat(balance),
        reserved=Msat(reserved),
        total_spent=Msat(0),
        total_requests=0,
        created_at=NOW,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        (S.ACTIVE, S.CHARGED, True),
        (S.ACTIVE, S.RELEASED, True),
        (S.ACTIVE, S.EXPIRED, True),
        (S.EXPIRED, S.CHARGED, True),
        (S.EXPIRED, S.RELEASED, False),
        (S.EXPIRED, S.ACTIVE, False),
        (S.CHARGED, S.CHARGED, False),
        (S.CHARGED, S.RELEASED, False),
        (S.RELEASED, S.CHARGED, False),
        (S.RELEASED, S.RELEASED, False),
        (S.ACTIVE, S.ACTIVE, False),
    ],
)
def test_can_transition_follows_state_machine(source: S, target: S, allowed: bool) -> None:
    assert can_transition(source, target) is allowed


def test_transition_raises_state_error_when_charging_released_reservation() -> None:
    with pytest.raises(ReservationStateError) as raised:
        transition(S.RELEASED, S.CHARGED)

    assert isinstance(raised.value, ValueError)


@given(st.lists(st.sampled_from(list(S)), max_size=6))
def test_transition_sequences_reach_at_most_one_terminal_state(targets: list[S]) -> None:
    status = S.ACTIVE
    terminal_reached = 0
    for target in targets:
        if can_transition(status, target):
            status = transition(status, target)
            terminal_reached += status in {S.CHARGED, S.RELEASED}

    assert terminal_reached <= 1


def test_check_reservable_raises_insufficient_balance_with_details_when_available_is_short() -> None:
    key = _key(balance=1_000, reserved=400)

    with pytest.raises(InsufficientBalanceError) as raised:
        check_reservable(key, Msat(601), NOW)

    assert raised.value.details == {"required_msat": 601, "available_msat": 600}


def test_check_reservable_passes_when_available_equals_amount() -> None:
    check_reservable(_key(balance=1_000, reserved=400), Msat(600), NOW)


def test_check_reservable_raises_key_expired_when_expiry_reached() -> None:
    with pytest.raises(KeyExpiredError):
        check_reservable(_key(expires_at=NOW), Msat(1), NOW)


def test_check_limit_raises_when_limit_would_be_passed() -> None:
    key = _key(balance_limit=Msat(500), limit_used=Msat(300))

    with pytest.raises(BalanceLimitExceededError):
        check_limit(key, Msat(201))

    check_limit(key, Msat(200))


@pytest.mark.parametrize(
    ("kwargs", "tracked"),
    [({}, False), ({"parent_key_hash": "b" * 64}, True), ({"balance_limit": Msat(1)}, True)],
)
def test_tracks_limit_only_for_children_and_limited_keys(kwargs: dict[str, Any], tracked: bool) -> None:
    assert tracks_limit(_key(**kwargs)) is tracked


@pytest.mark.parametrize(
    "case",
    [
        (S.ACTIVE, 300, 500, 1_000, 500, 300, 0, 0),  # under the hold
        (S.ACTIVE, 500, 500, 1_000, 500, 500, 0, 0),  # exactly the hold
        (S.ACTIVE, 800, 500, 1_000, 500, 800, 0, 0),  # overrun covered by the free balance
        (S.ACTIVE, 2_000, 500, 1_000, 500, 1_000, 1_000, 0),  # overrun beyond the balance
        (S.ACTIVE, 2_000, 500, 1_000, 900, 600, 1_400, 400),  # other holds (400) stay covered
        (S.EXPIRED, 300, 500, 1_000, 0, 300, 0, 0),  # late settlement, hold already freed
        (S.EXPIRED, 300, 500, 1_000, 800, 200, 100, 800),  # late settlement capped at available
        (S.ACTIVE, 0, 500, 500, 500, 0, 0, 0),
    ],
)
def test_settlement_amounts_collects_what_the_table_says(case: tuple[S, int, int, int, int, int, int, int]) -> None:
    status, charge, hold, balance, reserved, collected, shortfall, reserved_after = case

    result = settlement_amounts(
        status=status, charge=Msat(charge), hold=Msat(hold), balance=Msat(balance), reserved=Msat(reserved)
    )

    assert (result.collected.value, result.shortfall.value, result.reserved_after.value) == (
        collected,
        shortfall,
        reserved_after,
    )
    assert result.balance_after.value == balance - collected


@pytest.mark.parametrize("status", [S.CHARGED, S.RELEASED])
def test_settlement_amounts_raises_state_error_when_reservation_is_closed(status: S) -> None:
    with pytest.raises(ReservationStateError):
        settlement_amounts(status=status, charge=Msat(1), hold=Msat(1), balance=Msat(1), reserved=Msat(0))


def test_settlement_amounts_raises_value_error_when_hold_exceeds_reserved() -> None:
    with pytest.raises(ValueError, match="hold"):
        settlement_amounts(status=S.ACTIVE, charge=Msat(1), hold=Msat(5), balance=Msat(10), reserved=Msat(4))


@st.composite
def _active_settlements(draw: st.DrawFn) -> tuple[Msat, Msat, Msat, Msat]:
    balance = draw(amounts)
    reserved = draw(st.integers(min_value=0, max_value=balance))
    hold = draw(st.integers(min_value=0, max_value=reserved))
    charge = draw(amounts)
    return Msat(charge), Msat(hold), Msat(balance), Msat(reserved)


@given(_active_settlements())
def test_settlement_amounts_never_goes_negative_and_keeps_other_holds_covered(
    case: tuple[Msat, Msat, Msat, Msat],
) -> None:
    charge, hold, balance, reserved = case

    result = settlement_amounts(status=S.ACTIVE, charge=charge, hold=hold, balance=balance, reserved=reserved)

    assert result.collected + result.shortfall == charge
    assert result.collected <= charge
    assert result.reserved_after == reserved - hold
    assert result.reserved_after <= result.balance_after  # other holds are still covered
    assert result.balance_after + result.collected == balance
    if charge <= hold:
        assert result.shortfall == Msat(0)


@given(_active_settlements())
def test_settlement_amounts_for_expired_hold_is_capped_at_available(case: tuple[Msat, Msat, Msat, Msat]) -> None:
    charge, hold, balance, reserved = case

    result = settlement_amounts(status=S.EXPIRED, charge=charge, hold=hold, balance=balance, reserved=reserved)

    assert result.collected == min(charge, balance - reserved)
    assert result.reserved_after == reserved
    assert result.reserved_after <= result.balance_after


@given(amounts, amounts, amounts)
def test_limit_used_after_settle_never_negative(limit_used: int, hold: int, collected: int) -> None:
    after = limit_used_after_settle(
        status=S.ACTIVE, limit_used=Msat(limit_used), hold=Msat(hold), collected=Msat(collected)
    )

    assert after.value == max(0, limit_used + collected - hold)


def test_limit_used_after_settle_adds_collected_for_expired_hold() -> None:
    after = limit_used_after_settle(status=S.EXPIRED, limit_used=Msat(100), hold=Msat(50), collected=Msat(30))

    assert after == Msat(130)


def test_limit_used_after_release_floors_at_zero() -> None:
    assert limit_used_after_release(Msat(30), Msat(50)) == Msat(0)
    assert limit_used_after_release(Msat(80), Msat(50)) == Msat(30)


@pytest.mark.parametrize(
    ("reset", "now", "expected"),
    [
        (LimitReset.DAILY, NOW, datetime(2026, 3, 11, tzinfo=UTC)),
        (LimitReset.DAILY, datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC)),
        (LimitReset.WEEKLY, NOW, datetime(2026, 3, 16, tzinfo=UTC)),  # 2026-03-10 is a Tuesday
        (LimitReset.WEEKLY, datetime(2026, 3, 16, tzinfo=UTC), datetime(2026, 3, 23, tzinfo=UTC)),
        (LimitReset.MONTHLY, NOW, datetime(2026, 4, 1, tzinfo=UTC)),
        (LimitReset.MONTHLY, datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_next_limit_reset_is_next_utc_boundary(reset: LimitReset, now: datetime, expected: datetime) -> None:
    assert next_limit_reset(reset, now) == expected


@given(st.sampled_from(list(LimitReset)), st.datetimes(max_value=datetime(9998, 1, 1), timezones=st.just(UTC)))  # noqa: DTZ001 - hypothesis bounds are naive
def test_next_limit_reset_is_strictly_later(reset: LimitReset, now: datetime) -> None:
    assert next_limit_reset(reset, now) > now


def test_limit_reset_due_only_after_boundary() -> None:
    key = _key(balance_limit_reset=LimitReset.DAILY, limit_reset_at=NOW)

    assert limit_reset_due(key, NOW)
    assert not limit_reset_due(_key(balance_limit_reset=LimitReset.DAILY, limit_reset_at=NOW), NOW.replace(hour=1))
    assert not limit_reset_due(_key(), NOW)
