"""Ledger fake: the whole Ledger port in memory, with the same rules and errors as SqlLedger."""

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from app.domain.accounts import (
    ApiKey,
    LedgerEntry,
    NewApiKey,
    NewChildKey,
    Reservation,
    ReservationRequest,
    ReservationStatus,
    Settlement,
)
from app.domain.balance import (
    check_limit,
    check_not_expired,
    check_reservable,
    limit_reset_due,
    limit_used_after_release,
    limit_used_after_settle,
    next_limit_reset,
    settlement_amounts,
    tracks_limit,
)
from app.domain.errors import (
    InvalidApiKeyError,
    NotParentKeyError,
    ReservationNotFoundError,
    ReservationStateError,
)
from app.domain.money import Msat

_S = ReservationStatus


class InMemoryLedger:
    """Each method runs without awaiting, so it is atomic under asyncio like one SQL transaction.

    Knobs: `fail_next` (raised by the next call, then cleared), `failures` (method name -> errors raised by its
    next calls, one each, in order). Records: `calls` (method name, first argument),
    `settlements`, `releases`, plus the state in `keys`, `reservations` and `entries`.
    """

    def __init__(self) -> None:
        self.keys: dict[str, ApiKey] = {}
        self.reservations: dict[str, Reservation] = {}
        self.entries: list[LedgerEntry] = []
        self.entry_meta: dict[str, dict[str, int]] = {}
        self.calls: list[tuple[str, object]] = []
        self.settlements: list[Settlement] = []
        self.releases: list[str] = []
        self.fail_next: Exception | None = None
        self.failures: dict[str, list[Exception]] = {}

    def _enter(self, method: str, argument: object) -> None:
        self.calls.append((method, argument))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        queued = self.failures.get(method)
        if queued:
            raise queued.pop(0)

    # -- keys --------------------------------------------------------------------------------------------------------
    async def create_key(self, key: NewApiKey) -> ApiKey:
        self._enter("create_key", key.key_hash)
        if key.key_hash in self.keys:
            return self.keys[key.key_hash]
        reset_at = (
            None if key.balance_limit_reset is None else next_limit_reset(key.balance_limit_reset, key.created_at)
        )
        stored = ApiKey(
            key_hash=key.key_hash,
            balance=key.grant,
            reserved=Msat(0),
            total_spent=Msat(0),
            total_requests=0,
            created_at=key.created_at,
            expires_at=key.expires_at,
            refund_address=key.refund_address,
            balance_limit=key.balance_limit,
            balance_limit_reset=key.balance_limit_reset,
            limit_reset_at=reset_at,
        )
        self.keys[key.key_hash] = stored
        self._journal(key.key_hash, "grant", key.grant.value, f"grant:{key.key_hash}", key.created_at)
        return stored

    async def create_child_keys(
        self, parent_key_hash: str, children: Sequence[NewChildKey], fee_per_key: Msat, now: datetime
    ) -> Sequence[ApiKey]:
        self._enter("create_child_keys", parent_key_hash)
        parent = self.keys.get(parent_key_hash)
        if parent is None:
            msg = "The API key is unknown"
            raise InvalidApiKeyError(msg)
        if parent.parent_key_hash is not None:
            msg = "Child keys cannot create child keys"
            raise NotParentKeyError(msg)
        check_not_expired(parent, now)
        fee = Msat(fee_per_key.value * len(children))
        if fee and children:
            check_reservable(parent, fee, now)
            self.keys[parent_key_hash] = dataclasses.replace(parent, balance=parent.balance - fee)
            self._journal(parent_key_hash, "child_key_fee", -fee.value, f"child_key_fee:{children[0].key_hash}", now)
        created = []
        for child in children:
            reset = child.balance_limit_reset
            key = ApiKey(
                key_hash=child.key_hash,
                balance=Msat(0),
                reserved=Msat(0),
                total_spent=Msat(0),
                total_requests=0,
                created_at=child.created_at,
                expires_at=child.expires_at,
                parent_key_hash=parent_key_hash,
                balance_limit=child.balance_limit,
                balance_limit_reset=reset,
                limit_reset_at=None if reset is None else next_limit_reset(reset, child.created_at),
            )
            self.keys[key.key_hash] = key
            created.append(key)
        return created

    def add_key(self, key: ApiKey) -> None:
        """Seed a key as-is (e.g. a child) with a journal entry matching its balance, so the audit holds."""
        self.keys[key.key_hash] = key
        if key.balance:
            self._journal(key.key_hash, "grant", key.balance.value, f"grant:{key.key_hash}", key.created_at)

    async def get_key(self, key_hash: str) -> ApiKey | None:
        self._enter("get_key", key_hash)
        return self.keys.get(key_hash)

    async def list_keys(self, *, limit: int = 100, offset: int = 0) -> Sequence[ApiKey]:
        self._enter("list_keys", offset)
        ordered = sorted(self.keys.values(), key=lambda k: (k.created_at, k.key_hash))
        return ordered[offset : offset + limit]

    # -- reservations ------------------------------------------------------------------------------------------------
    async def reserve(self, request: ReservationRequest) -> Reservation:
        self._enter("reserve", request.request_id)
        if request.request_id in self.reservations:
            return self.reservations[request.request_id]
        key = self.keys.get(request.key_hash)
        if key is None:
            msg = "The API key is unknown"
            raise InvalidApiKeyError(msg)
        check_not_expired(key, request.now)
        if limit_reset_due(key, request.now) and key.balance_limit_reset is not None:
            key = dataclasses.replace(
                key, limit_used=Msat(0), limit_reset_at=next_limit_reset(key.balance_limit_reset, request.now)
            )
            self.keys[key.key_hash] = key
        billing = self.keys.get(key.billing_key_hash)
        if billing is None:
            msg = "The API key's parent is unknown"
            raise InvalidApiKeyError(msg)
        check_reservable(billing, request.amount, request.now)
        if tracks_limit(key):
            check_limit(key, request.amount)
        self.keys[billing.key_hash] = dataclasses.replace(billing, reserved=billing.reserved + request.amount)
        if tracks_limit(key):
            current = self.keys[key.key_hash]
            self.keys[key.key_hash] = dataclasses.replace(current, limit_used=current.limit_used + request.amount)
        reservation = Reservation(
            request_id=request.request_id,
            key_hash=key.key_hash,
            billing_key_hash=billing.key_hash,
            amount=request.amount,
            status=_S.ACTIVE,
            lease_expires_at=request.lease_expires_at,
            created_at=request.now,
            model=request.model,
            provider_id=request.provider_id,
        )
        self.reservations[request.request_id] = reservation
        return reservation

    async def resize(self, request_id: str, amount: Msat, now: datetime) -> Reservation:
        self._enter("resize", request_id)
        reservation = self.reservations.get(request_id)
        if reservation is None:
            msg = f"no reservation {request_id}"
            raise ReservationNotFoundError(msg)
        if reservation.status is not _S.ACTIVE:
            msg = f"reservation {request_id} is {reservation.status.value} and cannot be resized"
            raise ReservationStateError(msg)
        delta = amount - reservation.amount if amount > reservation.amount else Msat(0)
        if not delta:
            return reservation
        billing = self.keys[reservation.billing_key_hash]
        check_reservable(billing, delta, now)
        user = self.keys[reservation.key_hash]
        if tracks_limit(user):
            check_not_expired(user, now)
            check_limit(user, delta)
        self.keys[billing.key_hash] = dataclasses.replace(billing, reserved=billing.reserved + delta)
        if tracks_limit(user):
            current = self.keys[user.key_hash]
            self.keys[user.key_hash] = dataclasses.replace(current, limit_used=current.limit_used + delta)
        resized = dataclasses.replace(reservation, amount=amount)
        self.reservations[request_id] = resized
        return resized

    async def settle(self, request_id: str, charge: Msat, now: datetime) -> Settlement:
        self._enter("settle", request_id)
        reservation = self.reservations.get(request_id)
        if reservation is None:
            msg = f"no reservation {request_id}"
            raise ReservationNotFoundError(msg)
        if reservation.status is _S.CHARGED:
            return self._prior_settlement(request_id)
        if reservation.status is _S.RELEASED:
            msg = f"reservation {request_id} was released and cannot be charged"
            raise ReservationStateError(msg)
        billing = self.keys[reservation.billing_key_hash]
        amounts = settlement_amounts(
            status=reservation.status,
            charge=charge,
            hold=reservation.amount,
            balance=billing.balance,
            reserved=billing.reserved,
        )
        self.keys[billing.key_hash] = dataclasses.replace(
            billing,
            balance=amounts.balance_after,
            reserved=amounts.reserved_after,
            total_spent=billing.total_spent + amounts.collected,
            total_requests=billing.total_requests + 1,
        )
        user = self.keys.get(reservation.key_hash)
        if user is not None and user.key_hash != billing.key_hash:
            user = dataclasses.replace(
                user, total_spent=user.total_spent + amounts.collected, total_requests=user.total_requests + 1
            )
            self.keys[user.key_hash] = user
        user = self.keys.get(reservation.key_hash)
        if user is not None and tracks_limit(user):
            used = limit_used_after_settle(
                status=reservation.status,
                limit_used=user.limit_used,
                hold=reservation.amount,
                collected=amounts.collected,
            )
            self.keys[user.key_hash] = dataclasses.replace(user, limit_used=used)
        self.reservations[request_id] = dataclasses.replace(
            reservation, status=_S.CHARGED, settled_at=now, charged=amounts.collected
        )
        self._journal(billing.key_hash, "charge", -amounts.collected.value, f"charge:{request_id}", now, request_id)
        self.entry_meta[f"charge:{request_id}"] = {
            "requested_msat": charge.value,
            "shortfall_msat": amounts.shortfall.value,
            "balance_after_msat": amounts.balance_after.value,
        }
        if amounts.shortfall:
            self._journal(billing.key_hash, "shortfall", 0, f"shortfall:{request_id}", now, request_id)
            self.entry_meta[f"shortfall:{request_id}"] = {"shortfall_msat": amounts.shortfall.value}
        settlement = Settlement(
            request_id=request_id,
            requested=charge,
            collected=amounts.collected,
            shortfall=amounts.shortfall,
            balance_after=amounts.balance_after,
        )
        self.settlements.append(settlement)
        return settlement

    def _prior_settlement(self, request_id: str) -> Settlement:
        meta = self.entry_meta[f"charge:{request_id}"]
        charged = self.reservations[request_id].charged or Msat(0)
        return Settlement(
            request_id=request_id,
            requested=Msat(meta["requested_msat"]),
            collected=charged,
            shortfall=Msat(meta["shortfall_msat"]),
            balance_after=Msat(meta["balance_after_msat"]),
        )

    async def release(self, request_id: str, now: datetime) -> bool:
        self._enter("release", request_id)
        released = self._end_hold(request_id, now, _S.RELEASED)
        if released:
            self.releases.append(request_id)
        return released

    async def renew_leases(self, request_ids: Sequence[str], lease_expires_at: datetime) -> int:
        self._enter("renew_leases", tuple(request_ids))
        renewed = 0
        for request_id in dict.fromkeys(request_ids):
            reservation = self.reservations.get(request_id)
            if reservation is not None and reservation.status is _S.ACTIVE:
                self.reservations[request_id] = dataclasses.replace(reservation, lease_expires_at=lease_expires_at)
                renewed += 1
        return renewed

    async def sweep_expired(self, now: datetime) -> int:
        self._enter("sweep_expired", now)
        due = [r.request_id for r in self.reservations.values() if r.status is _S.ACTIVE and r.lease_expires_at <= now]
        return sum(self._end_hold(request_id, now, _S.EXPIRED) for request_id in due)

    async def reset_due_limits(self, now: datetime) -> int:
        self._enter("reset_due_limits", now)
        due = [k for k in self.keys.values() if limit_reset_due(k, now) and k.balance_limit_reset is not None]
        for key in due:
            assert key.balance_limit_reset is not None
            self.keys[key.key_hash] = dataclasses.replace(
                key, limit_used=Msat(0), limit_reset_at=next_limit_reset(key.balance_limit_reset, now)
            )
        return len(due)

    def _end_hold(self, request_id: str, now: datetime, target: ReservationStatus) -> bool:
        reservation = self.reservations.get(request_id)
        if reservation is None or reservation.status is not _S.ACTIVE:
            return False
        self.reservations[request_id] = dataclasses.replace(
            reservation, status=target, settled_at=now if target is _S.RELEASED else None
        )
        billing = self.keys[reservation.billing_key_hash]
        self.keys[billing.key_hash] = dataclasses.replace(billing, reserved=billing.reserved - reservation.amount)
        user = self.keys[reservation.key_hash]
        self.keys[user.key_hash] = dataclasses.replace(
            user, limit_used=limit_used_after_release(user.limit_used, reservation.amount)
        )
        return True

    async def get_reservation(self, request_id: str) -> Reservation | None:
        self._enter("get_reservation", request_id)
        return self.reservations.get(request_id)

    async def entries_for_key(self, key_hash: str) -> Sequence[LedgerEntry]:
        self._enter("entries_for_key", key_hash)
        return [e for e in self.entries if e.key_hash == key_hash]

    def _journal(  # noqa: PLR0917 - mirrors the journal columns
        self,
        key_hash: str | None,
        kind: str,
        amount_msat: int,
        idempotency_key: str,
        now: datetime,
        request_id: str | None = None,
    ) -> None:
        if any(e.idempotency_key == idempotency_key for e in self.entries):
            msg = f"duplicate idempotency key {idempotency_key}"
            raise AssertionError(msg)
        self.entries.append(
            LedgerEntry(
                key_hash=key_hash,
                kind=kind,
                amount_msat=amount_msat,
                idempotency_key=idempotency_key,
                created_at=now,
                request_id=request_id,
            )
        )


class InMemoryLedgerAudit:
    """SPEC §5 invariants 1, 2 and 4 over an InMemoryLedger's state."""

    def __init__(self, ledger: InMemoryLedger) -> None:
        self._ledger = ledger
        self.runs = 0

    async def violations(self) -> Sequence[str]:
        self.runs += 1
        ledger = self._ledger
        found: list[str] = []
        for key in ledger.keys.values():
            journal = sum(e.amount_msat for e in ledger.entries if e.key_hash == key.key_hash)
            if journal != key.balance.value:
                found.append(f"invariant 1: key {key.key_id} balance {key.balance.value} != journal {journal}")
            held = sum(
                r.amount.value
                for r in ledger.reservations.values()
                if r.billing_key_hash == key.key_hash and r.status is _S.ACTIVE
            )
            if held != key.reserved.value or key.reserved > key.balance:
                found.append(f"invariant 2: key {key.key_id} reserved {key.reserved.value} != holds {held}")
        for reservation in ledger.reservations.values():
            charges = [e for e in ledger.entries if e.kind == "charge" and e.request_id == reservation.request_id]
            expected = 1 if reservation.status is _S.CHARGED else 0
            if len(charges) != expected:
                found.append(
                    f"invariant 4: reservation {reservation.request_id} is {reservation.status.value}"
                    f" with {len(charges)} charge entries"
                )
        return found
