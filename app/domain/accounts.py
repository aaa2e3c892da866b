"""API keys, reservations and settlements: the account records money moves work on."""

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from app.domain.money import Msat

KEY_PREFIX = "sk-"
ZERO = Msat(0)


def normalize_api_key(raw: str) -> str:
    """Keys are `sk-` + hex; the prefix is added when a client leaves it off (SPEC §6)."""
    return raw if raw.startswith(KEY_PREFIX) else KEY_PREFIX + raw


def hash_api_key(key: str) -> str:
    """The only form in which a key is stored: sha256 hex of the full key string."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key_hash: str) -> str:
    """The short, non-secret id used in logs and listings."""
    return key_hash[:8]


def looks_like_api_key(raw: str) -> bool:
    """`sk-` followed by 64 lowercase hex characters, with or without the prefix."""
    body = raw.removeprefix(KEY_PREFIX)
    return len(body) == 64 and all(c in "0123456789abcdef" for c in body)  # noqa: PLR2004 - sha256 hex length


class LimitReset(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A prepaid key. `balance` includes `reserved`; what a request may spend is `available`."""

    key_hash: str
    balance: Msat
    reserved: Msat
    total_spent: Msat
    total_requests: int
    created_at: datetime
    expires_at: datetime | None = None
    refund_address: str | None = None
    refund_mint_url: str | None = None
    refund_unit: str | None = None
    parent_key_hash: str | None = None
    balance_limit: Msat | None = None
    balance_limit_reset: LimitReset | None = None
    limit_used: Msat = ZERO
    limit_reset_at: datetime | None = None

    @property
    def available(self) -> Msat:
        return self.balance - self.reserved

    @property
    def key_id(self) -> str:
        return key_id(self.key_hash)

    @property
    def billing_key_hash(self) -> str:
        """Child keys spend their parent's balance."""
        return self.parent_key_hash or self.key_hash

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """What is needed to create a key; `grant` is the operator-issued opening balance (journal kind `grant`)."""

    key_hash: str
    grant: Msat
    created_at: datetime
    expires_at: datetime | None = None
    refund_address: str | None = None
    balance_limit: Msat | None = None
    balance_limit_reset: LimitReset | None = None


@dataclass(frozen=True, slots=True)
class NewChildKey:
    """A child key: it spends its parent's balance (its own balance and reserved stay 0), capped by its own limit."""

    key_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    balance_limit: Msat | None = None
    balance_limit_reset: LimitReset | None = None


class ReservationStatus(StrEnum):
    ACTIVE = "active"
    CHARGED = "charged"
    RELEASED = "released"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    """Hold `amount` on the billing key of `key_hash` for one request until `lease_expires_at`."""

    request_id: str
    key_hash: str
    amount: Msat
    now: datetime
    lease_expires_at: datetime
    model: str | None = None
    provider_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    request_id: str
    key_hash: str
    billing_key_hash: str
    amount: Msat
    status: ReservationStatus
    lease_expires_at: datetime
    created_at: datetime
    model: str | None = None
    provider_id: str | None = None
    settled_at: datetime | None = None
    charged: Msat | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of charging one request: `collected` left the balance, `shortfall` could not be collected."""

    request_id: str
    requested: Msat
    collected: Msat
    shortfall: Msat
    balance_after: Msat


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One append-only journal row. `amount_msat` is signed: credits positive, debits negative."""

    key_hash: str | None
    kind: str
    amount_msat: int
    idempotency_key: str
    created_at: datetime
    request_id: str | None = None
    mint_url: str | None = None
    unit: str | None = None
