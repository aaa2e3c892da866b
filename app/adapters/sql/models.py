"""SQLAlchemy 2 declarative models for every SPEC §5 table; money is BIGINT `*_msat` with CHECK (>= 0)."""

from datetime import datetime
from typing import Any

from advanced_alchemy.types import BigIntIdentity, DateTimeUTC
from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, MetaData, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

HASH = String(64)
URL = String(512)
UNIT = String(8)
STATE = String(16)
# advanced-alchemy's JsonB does not attach on SQLAlchemy 2.1; this is the same variant.
JSON_DOC = JSON().with_variant(JSONB(), "postgresql")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _nonneg(*columns: str) -> list[CheckConstraint]:
    return [CheckConstraint(f"{c} >= 0", name=f"{c}_nonneg") for c in columns]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: DateTimeUTC(timezone=True),
        int: BigInteger(),
        str: String(255),
    }


RESERVATION_STATUSES = ("active", "charged", "released", "expired")
LIMIT_RESETS = ("daily", "weekly", "monthly")
REDEMPTION_STATES = ("pending", "credited", "failed", "aborted")
PROOF_STATES = ("issuing", "unspent", "reserved", "spent", "sent")
REFUND_KINDS = ("change", "refund", "expiry")
REFUND_METHODS = ("token", "lightning")
REFUND_STATES = ("pending", "issued", "paid", "failed", "ambiguous")
INVOICE_PURPOSES = ("create", "topup")
INVOICE_STATES = ("pending", "paid", "expired", "failed")
PAYOUT_KINDS = ("payout", "withdraw")
PAYOUT_STATES = ("pending", "issued", "paid", "failed", "ambiguous")


class ApiKeyRow(Base):
    """A prepaid key, stored only as the sha256 hex of the key string. Children keep balance and reserved at 0."""

    __tablename__ = "api_keys"
    __table_args__ = (
        *_nonneg("balance_msat", "reserved_msat", "total_spent_msat", "total_requests", "limit_used_msat"),
        CheckConstraint("reserved_msat <= balance_msat", name="reserved_le_balance"),
        CheckConstraint("balance_limit_msat IS NULL OR balance_limit_msat >= 0", name="balance_limit_msat_nonneg"),
        CheckConstraint(
            f"balance_limit_reset IS NULL OR {_in('balance_limit_reset', LIMIT_RESETS)}", name="balance_limit_reset"
        ),
        Index(None, "parent_key_hash"),
    )

    key_hash: Mapped[str] = mapped_column(HASH, primary_key=True)
    balance_msat: Mapped[int] = mapped_column(default=0)
    reserved_msat: Mapped[int] = mapped_column(default=0)
    total_spent_msat: Mapped[int] = mapped_column(default=0)
    total_requests: Mapped[int] = mapped_column(default=0)
    refund_address: Mapped[str | None] = mapped_column(Text)
    refund_mint_url: Mapped[str | None] = mapped_column(URL)
    refund_unit: Mapped[str | None] = mapped_column(UNIT)
    expires_at: Mapped[datetime | None]
    parent_key_hash: Mapped[str | None] = mapped_column(HASH, ForeignKey("api_keys.key_hash"))
    balance_limit_msat: Mapped[int | None]
    balance_limit_reset: Mapped[str | None] = mapped_column(String(8))
    limit_used_msat: Mapped[int] = mapped_column(default=0)
    limit_reset_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class ReservationRow(Base):
    """A hold of `amount_msat` on the billing key for one request; exactly one terminal transition."""

    __tablename__ = "reservations"
    __table_args__ = (
        *_nonneg("amount_msat"),
        CheckConstraint("charged_msat IS NULL OR charged_msat >= 0", name="charged_msat_nonneg"),
        CheckConstraint(_in("status", RESERVATION_STATUSES), name="status"),
        Index(None, "status", "lease_expires_at"),
        Index(None, "billing_key_hash", "status"),
    )

    request_id: Mapped[str] = mapped_column(HASH, primary_key=True)
    key_hash: Mapped[str] = mapped_column(HASH, ForeignKey("api_keys.key_hash"))
    billing_key_hash: Mapped[str] = mapped_column(HASH, ForeignKey("api_keys.key_hash"))
    amount_msat: Mapped[int]
    status: Mapped[str] = mapped_column(STATE)
    lease_expires_at: Mapped[datetime]
    model: Mapped[str | None]
    provider_id: Mapped[str | None]
    created_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]
    charged_msat: Mapped[int | None]


class LedgerEntryRow(Base):
    """Append-only journal; `amount_msat` is signed. `key_hash` is null for owner entries (payout, withdraw)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index(None, "key_hash"),
        Index(None, "request_id"),
        Index(None, "kind"),
    )

    id: Mapped[int] = mapped_column(BigIntIdentity, primary_key=True, autoincrement=True)
    key_hash: Mapped[str | None] = mapped_column(HASH)
    kind: Mapped[str] = mapped_column(String(32))
    amount_msat: Mapped[int]
    request_id: Mapped[str | None] = mapped_column(HASH)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    mint_url: Mapped[str | None] = mapped_column(URL)
    unit: Mapped[str | None] = mapped_column(UNIT)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC)
    created_at: Mapped[datetime]


class RedemptionRow(Base):
    """One claimed token; `token_hash` is sha256 of its proof secrets sorted and joined with newlines."""

    __tablename__ = "redemptions"
    __table_args__ = (
        *_nonneg("amount", "fee", "credited_msat"),
        CheckConstraint(_in("state", REDEMPTION_STATES), name="state"),
        Index(None, "key_hash"),
        Index(None, "state", "attempt_started_at"),
    )

    token_hash: Mapped[str] = mapped_column(HASH, primary_key=True)
    key_hash: Mapped[str] = mapped_column(HASH)
    mint_url: Mapped[str] = mapped_column(URL)
    unit: Mapped[str] = mapped_column(UNIT)
    amount: Mapped[int]
    fee: Mapped[int] = mapped_column(default=0)
    credited_msat: Mapped[int] = mapped_column(default=0)
    state: Mapped[str] = mapped_column(STATE)
    error_code: Mapped[str | None] = mapped_column(String(64))
    input_ys: Mapped[list[str]] = mapped_column(JSON_DOC)
    attempt_started_at: Mapped[datetime]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CashuProofRow(Base):
    """The node wallet: one proof (or one persisted output awaiting its signature, state `issuing`)."""

    __tablename__ = "cashu_proofs"
    __table_args__ = (
        *_nonneg("amount"),
        CheckConstraint(_in("state", PROOF_STATES), name="state"),
        Index(None, "mint_url", "unit", "state"),
        Index(None, "op_id"),
    )

    id: Mapped[int] = mapped_column(BigIntIdentity, primary_key=True, autoincrement=True)
    mint_url: Mapped[str] = mapped_column(URL)
    unit: Mapped[str] = mapped_column(UNIT)
    keyset_id: Mapped[str] = mapped_column(String(66))
    amount: Mapped[int]
    secret: Mapped[str] = mapped_column(String(255), unique=True)
    c: Mapped[str | None] = mapped_column(String(130))
    blinded_message: Mapped[str] = mapped_column(String(130))
    blinding_factor: Mapped[str] = mapped_column(String(130))
    dleq: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC)
    state: Mapped[str] = mapped_column(STATE)
    op_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RefundRow(Base):
    """Change and refunds. No token strings are stored: tokens are rebuilt from their `sent` proofs."""

    __tablename__ = "refunds"
    __table_args__ = (
        *_nonneg("amount", "fee"),
        CheckConstraint(_in("kind", REFUND_KINDS), name="kind"),
        CheckConstraint(_in("method", REFUND_METHODS), name="method"),
        CheckConstraint(_in("state", REFUND_STATES), name="state"),
        Index(None, "key_hash"),
        Index(None, "request_id"),
        Index(None, "state", "updated_at"),
    )

    id: Mapped[str] = mapped_column(HASH, primary_key=True)
    key_hash: Mapped[str] = mapped_column(HASH)
    request_id: Mapped[str | None] = mapped_column(HASH)
    kind: Mapped[str] = mapped_column(STATE)
    method: Mapped[str] = mapped_column(STATE)
    mint_url: Mapped[str] = mapped_column(URL)
    unit: Mapped[str] = mapped_column(UNIT)
    amount: Mapped[int]
    fee: Mapped[int] = mapped_column(default=0)
    destination: Mapped[str | None] = mapped_column(Text)
    melt_quote_id: Mapped[str | None]
    state: Mapped[str] = mapped_column(STATE)
    collected_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LightningInvoiceRow(Base):
    """A Lightning deposit: `id_hash` is sha256 of the public invoice id handed to the client."""

    __tablename__ = "lightning_invoices"
    __table_args__ = (
        *_nonneg("amount_sats"),
        CheckConstraint("balance_limit_msat IS NULL OR balance_limit_msat >= 0", name="balance_limit_msat_nonneg"),
        CheckConstraint(_in("purpose", INVOICE_PURPOSES), name="purpose"),
        CheckConstraint(_in("state", INVOICE_STATES), name="state"),
        Index(None, "state", "next_check_at"),
    )

    id_hash: Mapped[str] = mapped_column(HASH, primary_key=True)
    purpose: Mapped[str] = mapped_column(STATE)
    key_hash: Mapped[str | None] = mapped_column(HASH)
    mint_url: Mapped[str] = mapped_column(URL)
    unit: Mapped[str] = mapped_column(UNIT)
    amount_sats: Mapped[int]
    quote_id: Mapped[str] = mapped_column(String(255), unique=True)
    bolt11: Mapped[str] = mapped_column(Text, unique=True)
    payment_hash: Mapped[str] = mapped_column(HASH, unique=True)
    state: Mapped[str] = mapped_column(STATE)
    balance_limit_msat: Mapped[int | None]
    balance_limit_reset: Mapped[str | None] = mapped_column(String(8))
    key_expires_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime]
    created_at: Mapped[datetime]


class OwnerPayoutRow(Base):
    """A payout or withdrawal of owner funds; never touches user liabilities."""

    __tablename__ = "owner_payouts"
    __table_args__ = (
        *_nonneg("amount", "fee"),
        CheckConstraint(_in("kind", PAYOUT_KINDS), name="kind"),
        CheckConstraint(_in("state", PAYOUT_STATES), name="state"),
        Index(None, "state"),
    )

    id: Mapped[str] = mapped_column(HASH, primary_key=True)
    kind: Mapped[str] = mapped_column(STATE)
    mint_url: Mapped[str] = mapped_column(URL)
    unit: Mapped[str] = mapped_column(UNIT)
    amount: Mapped[int]
    fee: Mapped[int] = mapped_column(default=0)
    destination: Mapped[str | None] = mapped_column(Text)
    melt_quote_id: Mapped[str | None]
    state: Mapped[str] = mapped_column(STATE)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class JobLeaseRow(Base):
    """Which instance runs a leased job, until when."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]


metadata = Base.metadata
