"""Account balance rules: the reservation state machine, reservation checks, settlement arithmetic, limit resets."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from app.domain.accounts import ApiKey, LimitReset, ReservationStatus
from app.domain.errors import (
    BalanceLimitExceededError,
    InsufficientBalanceError,
    KeyExpiredError,
    ReservationStateError,
)
from app.domain.money import Msat

_S = ReservationStatus

# active ends in exactly one of charged | released | expired; a late settlement may still charge an expired hold.
TRANSITIONS: Final[dict[ReservationStatus, frozenset[ReservationStatus]]] = {
    _S.ACTIVE: frozenset({_S.CHARGED, _S.RELEASED, _S.EXPIRED}),
    _S.EXPIRED: frozenset({_S.CHARGED}),
    _S.CHARGED: frozenset(),
    _S.RELEASED: frozenset(),
}
TERMINAL: Final = frozenset({_S.CHARGED, _S.RELEASED})
HOLDING: Final = frozenset({_S.ACTIVE})  # only active reservations count towards `reserved_msat`


def can_transition(source: ReservationStatus, target: ReservationStatus) -> bool:
    return target in TRANSITIONS[source]


def transition(source: ReservationStatus, target: ReservationStatus) -> ReservationStatus:
    """The new status; raises ReservationStateError for a move the state machine forbids."""
    if not can_transition(source, target):
        msg = f"reservation cannot move from {source.value} to {target.value}"
        raise ReservationStateError(msg)
    return target


# -- reserving -------------------------------------------------------------------------------------------------------
def check_not_expired(key: ApiKey, now: datetime) -> None:
    """Raises KeyExpiredError once `now` reached the key's expiry."""
    if key.is_expired(now):
        msg = "The API key has expired"
        raise KeyExpiredError(msg)


def check_reservable(billing: ApiKey, amount: Msat, now: datetime) -> None:
    """Why a hold of `amount` on the billing key cannot be placed, as the error a client gets.

    Raises KeyExpiredError, then InsufficientBalanceError with details `required_msat` and `available_msat`.
    """
    check_not_expired(billing, now)
    if billing.available < amount:
        msg = "Insufficient balance for this request"
        raise InsufficientBalanceError(
            msg, details={"required_msat": amount.value, "available_msat": billing.available.value}
        )


def tracks_limit(key: ApiKey) -> bool:
    """Children and keys with a balance limit count what they hold and spend in `limit_used`."""
    return key.parent_key_hash is not None or key.balance_limit is not None


def check_limit(key: ApiKey, amount: Msat) -> None:
    """Raises BalanceLimitExceededError when holding `amount` more would pass the key's balance limit."""
    if key.balance_limit is not None and key.limit_used + amount > key.balance_limit:
        msg = "The key's balance limit is reached"
        raise BalanceLimitExceededError(
            msg,
            details={
                "required_msat": amount.value,
                "limit_msat": key.balance_limit.value,
                "limit_used_msat": key.limit_used.value,
            },
        )


# -- settling --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SettlementAmounts:
    """What a settlement moves on the billing key. `collected + shortfall == charge`."""

    collected: Msat
    shortfall: Msat
    balance_after: Msat
    reserved_after: Msat


def settlement_amounts(
    *, status: ReservationStatus, charge: Msat, hold: Msat, balance: Msat, reserved: Msat
) -> SettlementAmounts:
    """Charge a hold of `hold` on a key holding `balance` with `reserved` held in total.

    An active hold is still part of `reserved`: collect `min(charge, hold + balance - reserved)` and free the hold.
    An expired hold was already freed by the sweeper: collect `min(charge, balance - reserved)`. Either way other
    holds stay covered and nothing goes negative; the rest is the shortfall.
    Raises ReservationStateError for a charged or released reservation, ValueError for inconsistent inputs.
    """
    transition(status, _S.CHARGED)
    if reserved > balance:
        msg = f"reserved {reserved.value} exceeds balance {balance.value}"
        raise ValueError(msg)
    if status is _S.ACTIVE:
        if hold > reserved:
            msg = f"hold {hold.value} exceeds reserved {reserved.value}"
            raise ValueError(msg)
        collectable = hold + balance - reserved
        reserved_after = reserved - hold
    else:
        collectable = balance - reserved
        reserved_after = reserved
    collected = min(charge, collectable)
    return SettlementAmounts(
        collected=collected,
        shortfall=charge - collected,
        balance_after=balance - collected,
        reserved_after=reserved_after,
    )


def limit_used_after_settle(*, status: ReservationStatus, limit_used: Msat, hold: Msat, collected: Msat) -> Msat:
    """`limit_used += collected - hold` for an active hold (floored at 0: a reset may have run meanwhile);
    an expired hold's R was already given back by the sweeper, so only `collected` is added."""
    if status is _S.ACTIVE:
        return (limit_used + collected).saturating_sub(hold)
    return limit_used + collected


def limit_used_after_release(limit_used: Msat, hold: Msat) -> Msat:
    """Releasing or expiring a hold gives its R back to the limit, floored at 0."""
    return limit_used.saturating_sub(hold)


# -- limit resets ----------------------------------------------------------------------------------------------------
def next_limit_reset(reset: LimitReset, now: datetime) -> datetime:
    """The next UTC boundary strictly after `now`: midnight, Monday midnight, or the 1st of the next month."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if reset is LimitReset.DAILY:
        return midnight + timedelta(days=1)
    if reset is LimitReset.WEEKLY:
        return midnight + timedelta(days=7 - midnight.weekday())
    if midnight.month == 12:  # noqa: PLR2004 - December rolls into the next year
        return midnight.replace(year=midnight.year + 1, month=1, day=1)
    return midnight.replace(month=midnight.month + 1, day=1)


def limit_reset_due(key: ApiKey, now: datetime) -> bool:
    """A reset zeroes `limit_used` once its boundary has passed."""
    return key.balance_limit_reset is not None and key.limit_reset_at is not None and key.limit_reset_at <= now
