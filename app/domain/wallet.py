"""The node wallet and its payment records: redemptions of received tokens, proofs it holds, refunds it sends.

Unit amounts (`amount`, `fee`) are integers in the token's unit (`sat` or `msat`); ledger amounts are `Msat`.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from app.domain.accounts import KEY_PREFIX, LimitReset, hash_api_key
from app.domain.money import MSAT_PER_SAT, Msat

UNIT_MSAT = {"sat": MSAT_PER_SAT, "msat": 1}
TOKEN_PREFIXES = ("cashuA", "cashuB")


class RedemptionState(StrEnum):
    PENDING = "pending"
    CREDITED = "credited"
    FAILED = "failed"
    ABORTED = "aborted"


class WalletProofState(StrEnum):
    """A stored proof's life: `issuing` (an output awaiting its signature) -> `unspent` -> `reserved` ->
    `spent` (swapped or melted away) or `sent` (handed to a client). Rows are never deleted."""

    ISSUING = "issuing"
    UNSPENT = "unspent"
    RESERVED = "reserved"
    SPENT = "spent"
    SENT = "sent"


class RefundKind(StrEnum):
    CHANGE = "change"
    REFUND = "refund"
    EXPIRY = "expiry"


class RefundState(StrEnum):
    PENDING = "pending"
    ISSUED = "issued"
    PAID = "paid"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"


def msat_per_unit(unit: str) -> int:
    """How many msat one unit is worth. Raises KeyError for anything but `sat` and `msat`."""
    return UNIT_MSAT[unit]


def unit_to_msat(amount: int, unit: str) -> Msat:
    return Msat(amount * msat_per_unit(unit))


def payable_units(available: Msat, unit: str) -> tuple[int, Msat]:
    """What a refund of `available` pays in `unit` (rounded down) and the remainder kept as `rounding`."""
    per_unit = msat_per_unit(unit)
    units = available.value // per_unit
    return units, Msat(available.value - units * per_unit)


def looks_like_token(credential: str) -> bool:
    """A bearer credential that is a Cashu token (`cashuA…`, `cashuB…`, optionally `cashu:`-prefixed)."""
    return credential.startswith(TOKEN_PREFIXES) or credential[:6].lower() == "cashu:"


def token_api_key(token: str) -> str:
    """The key a token stands for (SPEC §6): `sk-` + sha256 hex of the token string exactly as presented."""
    return KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def token_key_hash(token: str) -> str:
    """The stored hash of `token_api_key(token)`."""
    return hash_api_key(token_api_key(token))


def normalize_mint_url(url: str) -> str | None:
    """Lowercase scheme and host, no trailing `/` (SPEC §2); None when `url` is not an http(s) URL."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


@dataclass(frozen=True, slots=True)
class KeyTerms:
    """Options a key gets when a redemption creates it (ignored when the key already exists)."""

    expires_at: datetime | None = None
    refund_address: str | None = None
    balance_limit: Msat | None = None
    balance_limit_reset: LimitReset | None = None


@dataclass(frozen=True, slots=True)
class Redemption:
    """One claimed token (`redemptions` row). `amount` is the face value, `fee` the mint's input fee, in `unit`."""

    token_hash: str
    key_hash: str
    mint_url: str
    unit: str
    amount: int
    fee: int
    credited: Msat
    state: RedemptionState
    input_ys: tuple[str, ...]
    attempt_started_at: datetime
    created_at: datetime
    updated_at: datetime
    error_code: str | None = None

    @property
    def op_id(self) -> str:
        return redemption_op_id(self.token_hash)


def redemption_op_id(token_hash: str) -> str:
    """The `cashu_proofs.op_id` of a redemption's outputs and its `deposit` idempotency key."""
    return f"redeem:{token_hash}"


@dataclass(frozen=True, slots=True)
class NewRedemption:
    token_hash: str
    key_hash: str
    mint_url: str
    unit: str
    amount: int
    fee: int
    input_ys: tuple[str, ...]
    now: datetime


@dataclass(frozen=True, slots=True)
class RedemptionCredit:
    """Everything the one credit transaction writes: the redemption's outcome, its proofs, the key's deposit."""

    token_hash: str
    key_hash: str
    mint_url: str
    unit: str
    credited: Msat
    now: datetime
    terms: KeyTerms = KeyTerms()
    # The attempt this credit belongs to: the CAS also requires this `attempt_started_at` (None: any attempt).
    attempt_started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RefundRecord:
    """A `refunds` row: `amount` (in `unit`) left the key's balance; `fee` is what the mint kept when swapping."""

    id: str
    key_hash: str
    kind: RefundKind
    mint_url: str
    unit: str
    amount: int
    fee: int
    state: RefundState
    created_at: datetime
    updated_at: datetime
    request_id: str | None = None
    collected_at: datetime | None = None

    @property
    def op_id(self) -> str:
        return refund_op_id(self.id)


def refund_op_id(refund_id: str) -> str:
    """The `cashu_proofs.op_id` of a send's inputs and outputs, and the `refund` entry's idempotency key."""
    return f"refund:{refund_id}"


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Debit `amount` units plus `rounding` msat from the key and reserve proofs worth at least `amount`.

    `expected_balance` is the key balance the caller read: the debit is a CAS on it (and on `reserved = 0`).
    """

    refund_id: str
    key_hash: str
    mint_url: str
    unit: str
    amount: int
    rounding: Msat
    expected_balance: Msat
    now: datetime
    kind: RefundKind = RefundKind.REFUND
    request_id: str | None = None

    @property
    def debit(self) -> Msat:
        return unit_to_msat(self.amount, self.unit) + self.rounding


def select_proofs(amounts: dict[int, int], target: int) -> list[int] | None:
    """Pick proof ids (`id -> amount`) adding up to at least `target`, preferring an exact match, then little change.

    Largest-first over proofs no bigger than what is still needed (exact for power-of-two wallets); a shortfall is
    covered by the smallest remaining proof. None when all of them are too little.
    """
    if target <= 0:
        return []
    if sum(amounts.values()) < target:
        return None
    chosen: list[int] = []
    need = target
    ordered = sorted(amounts.items(), key=lambda item: (-item[1], item[0]))
    for proof_id, amount in ordered:
        if amount <= need:
            chosen.append(proof_id)
            need -= amount
            if need == 0:
                return chosen
    rest = [(pid, amt) for pid, amt in ordered if pid not in chosen]
    # Every proof left was bigger than what was needed when it was passed over, so any of them covers the rest.
    chosen.append(min(rest, key=lambda item: (item[1], item[0]))[0])
    return chosen
