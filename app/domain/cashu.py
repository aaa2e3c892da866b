"""Cashu ecash values (proofs, tokens, keysets, quotes) and the pure rules on them: fees, splits, short keyset ids.

Amounts here are integers in the keyset's unit (`sat` or `msat`), as the mint counts them; conversion to `Msat`
happens where a unit amount meets the ledger.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

MAX_TOKEN_BYTES = 100 * 1024
MAX_TOKEN_PROOFS = 500
MAX_AMOUNT = 2**63 - 1  # what a BIGINT column holds; also caps a token's total
KEYSET_ID_V1_PREFIX = "00"
KEYSET_ID_V2_PREFIX = "01"


@dataclass(frozen=True, slots=True)
class Dleq:
    """A NUT-12 discrete-log-equality proof: `e` and `s` scalars (hex); `r`, the blinding factor, on proofs only."""

    e: str
    s: str
    r: str | None = None


@dataclass(frozen=True, slots=True)
class Proof:
    """An unblinded signature: spendable ecash worth `amount` units of its keyset.

    `keyset_id` may be a short v2 id (as carried by `cashuB` tokens) until resolved against the mint's keysets.
    `c` is the compressed point in hex; `secret` is the string whose hash-to-curve the mint signed.
    """

    amount: int
    keyset_id: str
    secret: str
    c: str
    dleq: Dleq | None = None
    witness: str | None = None


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token: proofs of one mint and one unit (the node refuses multi-mint tokens)."""

    mint: str
    unit: str
    proofs: tuple[Proof, ...]
    memo: str | None = None

    @property
    def amount(self) -> int:
        """The face value in `unit`, before any mint input fee."""
        return sum(p.amount for p in self.proofs)

    @property
    def token_hash(self) -> str:
        """sha256 hex of the proof secrets, sorted and joined with `\\n`: the same for any encoding of the token."""
        return proofs_hash(self.proofs)


def proofs_hash(proofs: Iterable[Proof]) -> str:
    """The encoding-independent identity of a set of proofs (SPEC §5 `redemptions.token_hash`)."""
    return hashlib.sha256("\n".join(sorted(p.secret for p in proofs)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class BlindedMessage:
    """An output sent to the mint: `b_` is the blinded point (hex) for `amount` in keyset `keyset_id`."""

    amount: int
    keyset_id: str
    b_: str


@dataclass(frozen=True, slots=True)
class BlindSignature:
    """The mint's signature `c_` (hex) on a blinded message, with its DLEQ proof when the mint sends one."""

    amount: int
    keyset_id: str
    c_: str
    dleq: Dleq | None = None


@dataclass(frozen=True, slots=True)
class PendingOutput:
    """A blinded output together with what is needed to unblind its signature later.

    Persist it before the mint call that signs it: with `secret` and `blinding_factor` the proof can be rebuilt
    from a restore (NUT-09) after a lost reply. `blinding_factor` is a secret scalar (hex); never log it.
    """

    amount: int
    keyset_id: str
    secret: str
    blinding_factor: str
    b_: str

    @property
    def message(self) -> BlindedMessage:
        return BlindedMessage(amount=self.amount, keyset_id=self.keyset_id, b_=self.b_)


@dataclass(frozen=True, slots=True)
class Keyset:
    """A mint keyset: public keys per amount (hex, compressed) and the fee per input in parts per thousand."""

    id: str
    unit: str
    active: bool
    input_fee_ppk: int = 0
    keys: Mapping[int, str] = field(default_factory=dict)
    final_expiry: int | None = None

    @property
    def amounts(self) -> tuple[int, ...]:
        return tuple(sorted(self.keys))


class ProofStateKind(StrEnum):
    UNSPENT = "UNSPENT"
    PENDING = "PENDING"
    SPENT = "SPENT"


@dataclass(frozen=True, slots=True)
class ProofState:
    """NUT-07 state of the proof whose `Y = hash_to_curve(secret)` is `y` (hex)."""

    y: str
    state: ProofStateKind
    witness: str | None = None


class QuoteState(StrEnum):
    UNPAID = "UNPAID"
    PAID = "PAID"
    PENDING = "PENDING"
    ISSUED = "ISSUED"


@dataclass(frozen=True, slots=True)
class MintQuote:
    """A NUT-04 bolt11 mint quote: pay `request` to mint `amount` units."""

    quote_id: str
    request: str
    amount: int
    unit: str
    state: QuoteState
    expiry: int | None = None


@dataclass(frozen=True, slots=True)
class MeltQuote:
    """A NUT-05 bolt11 melt quote: paying `request` costs `amount` plus at most `fee_reserve` units.

    `change` holds the mint's signatures on blank outputs (NUT-08) once the quote is paid; the caller unblinds them.
    """

    quote_id: str
    request: str
    amount: int
    fee_reserve: int
    unit: str
    state: QuoteState
    expiry: int | None = None
    payment_preimage: str | None = None
    change: tuple[BlindSignature, ...] = ()


@dataclass(frozen=True, slots=True)
class MeltResult:
    """Outcome of a melt: the quote's final state and the change proofs already unblinded."""

    quote: MeltQuote
    change: tuple[Proof, ...] = ()


@dataclass(frozen=True, slots=True)
class MintInfo:
    """The parts of a mint's `/v1/info` the node uses: its name, version and the NUTs it supports."""

    name: str | None
    version: str | None
    nuts: frozenset[int]


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """A NUT-18 payment request. The node's 402s carry `a`, `u`, `m`, `s` and `d` and no transport (in-band)."""

    amount: int | None
    unit: str | None
    mints: tuple[str, ...] = ()
    single_use: bool | None = None
    description: str | None = None
    request_id: str | None = None
    has_transports: bool = False
    has_lock: bool = False


# -- rules -----------------------------------------------------------------------------------------------------------
def input_fee(proofs: Iterable[Proof], fee_ppk_by_keyset: Mapping[str, int]) -> int:
    """NUT-02 input fee: `ceil(sum of input_fee_ppk over inputs / 1000)`, in the keyset unit.

    `proofs` must carry resolved (full) keyset ids; an unknown id raises KeyError.
    """
    total_ppk = sum(fee_ppk_by_keyset[p.keyset_id] for p in proofs)
    return -(-total_ppk // 1000)


def split_amount(amount: int, available: Sequence[int] | None = None) -> list[int]:
    """Decompose `amount` into the powers of two (ascending) a mint signs; checks them against `available`."""
    if amount < 0:
        msg = f"amount must not be negative: {amount}"
        raise ValueError(msg)
    parts = [1 << bit for bit in range(amount.bit_length()) if amount >> bit & 1]
    if available is not None:
        allowed = set(available)
        missing = [p for p in parts if p not in allowed]
        if missing:
            msg = f"keyset has no key for amounts {missing}"
            raise ValueError(msg)
    return parts


def is_short_keyset_id(keyset_id: str) -> bool:
    """A v2 keyset id shortened to 8 bytes (`01` + 14 hex), as `cashuB` tokens carry it."""
    return keyset_id.startswith(KEYSET_ID_V2_PREFIX) and len(keyset_id) == 16  # noqa: PLR2004 - 8 bytes in hex


def resolve_keyset_id(keyset_id: str, known_ids: Iterable[str]) -> str | None:
    """The full id a (possibly short) keyset id names: exact match first, else the unique id it prefixes.

    None when nothing or more than one known id matches (an ambiguous prefix is never guessed).
    """
    known = list(known_ids)
    if keyset_id in known:
        return keyset_id
    if not is_short_keyset_id(keyset_id):
        return None
    matches = [k for k in known if k.startswith(keyset_id)]
    return matches[0] if len(matches) == 1 else None


def is_locked_secret(secret: str) -> bool:
    """True for NUT-10 well-known secrets (`["P2PK", {...}]`, `["HTLC", {...}]`): spending needs a witness."""
    if not secret.lstrip().startswith("["):
        return False
    try:
        parsed = json.loads(secret)
    except ValueError:
        return False
    return isinstance(parsed, list) and len(parsed) == 2 and isinstance(parsed[0], str)  # noqa: PLR2004 - [kind, data]
