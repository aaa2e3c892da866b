"""msgspec request and response bodies. Wire names fixed by compatibility map onto *_msat attributes."""

from typing import Annotated, Literal

import msgspec

from app.domain.node import HealthReport, NodeInfo
from app.domain.services.accounts import Caller
from app.domain.services.payments import CreatedKey
from app.domain.services.refunds import RefundToken


class Schema(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base for all bodies."""


class RootResponse(Schema, frozen=True):
    name: str
    description: str
    version: str
    status: str = "running"

    @classmethod
    def from_domain(cls, info: NodeInfo) -> "RootResponse":
        return cls(name=info.name, description=info.description, version=info.version)


class FeesSchema(Schema, frozen=True):
    exchange_fee: str
    upstream_provider_fee: str
    formula: str


def _ppm_text(ppm: int) -> str:
    whole, frac = divmod(ppm, 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".")


class InfoResponse(Schema, frozen=True):
    name: str
    description: str
    version: str
    npub: str | None
    mints: list[str]
    http_url: str | None
    onion_url: str | None
    child_key_cost_msat: int = msgspec.field(name="child_key_cost_msats")
    primary_mint: str
    unit: str
    pricing_mode: str
    min_request_msat: int
    fees: FeesSchema
    nuts: list[str]

    @classmethod
    def from_domain(cls, info: NodeInfo) -> "InfoResponse":
        return cls(
            name=info.name,
            description=info.description,
            version=info.version,
            npub=info.npub,
            mints=list(info.mints),
            http_url=info.http_url,
            onion_url=info.onion_url,
            child_key_cost_msat=info.child_key_cost_msat,
            primary_mint=info.primary_mint,
            unit=info.unit,
            pricing_mode=info.pricing_mode,
            min_request_msat=info.min_request_msat,
            fees=FeesSchema(
                exchange_fee=_ppm_text(info.exchange_fee_ppm),
                upstream_provider_fee=_ppm_text(info.upstream_provider_fee_ppm),
                formula="client price = upstream USD x exchange_fee x upstream_provider_fee",
            ),
            nuts=["24"],
        )


class HealthResponse(Schema, frozen=True):
    status: str
    checks: dict[str, str]

    @classmethod
    def from_domain(cls, report: HealthReport) -> "HealthResponse":
        return cls(status="ok" if report.healthy else "unhealthy", checks=report.checks)


class BalanceInfoResponse(Schema, frozen=True):
    api_key: str
    balance_msat: int = msgspec.field(name="balance")
    reserved_msat: int = msgspec.field(name="reserved")
    is_child: bool
    total_requests: int
    total_spent_msat: int = msgspec.field(name="total_spent")
    balance_limit_msat: int | None = msgspec.field(name="balance_limit")
    balance_limit_reset: str | None
    validity_date: int | None

    @classmethod
    def from_domain(cls, caller: Caller) -> "BalanceInfoResponse":
        key = caller.key
        return cls(
            api_key=caller.presented_key,
            balance_msat=key.available.value,
            reserved_msat=key.reserved.value,
            is_child=key.parent_key_hash is not None,
            total_requests=key.total_requests,
            total_spent_msat=key.total_spent.value,
            balance_limit_msat=key.balance_limit.value if key.balance_limit is not None else None,
            balance_limit_reset=key.balance_limit_reset.value if key.balance_limit_reset is not None else None,
            validity_date=int(key.expires_at.timestamp()) if key.expires_at is not None else None,
        )


class LenientSchema(msgspec.Struct, frozen=True, kw_only=True):
    """Base for request bodies Routstr clients send with extra fields (compatibility: they must keep working)."""


class BalanceCreateRequest(LenientSchema, frozen=True):
    initial_balance_token: str | None = None
    cashu_token: str | None = None
    balance_limit_msat: Annotated[int, msgspec.Meta(ge=0)] | None = msgspec.field(default=None, name="balance_limit")
    balance_limit_reset: Literal["daily", "weekly", "monthly"] | None = None
    validity_date: Annotated[int, msgspec.Meta(ge=0)] | None = None


class TopupRequest(LenientSchema, frozen=True):
    cashu_token: str | None = None


class CreateKeyResponse(Schema, frozen=True):
    api_key: str
    balance_msat: int = msgspec.field(name="balance")

    @classmethod
    def from_domain(cls, created: CreatedKey) -> "CreateKeyResponse":
        return cls(api_key=created.api_key, balance_msat=created.key.available.value)


class TopupResponse(Schema, frozen=True):
    credited_msat: int = msgspec.field(name="msats")


class RefundTokenResponse(Schema, frozen=True, omit_defaults=True):
    """`{"token", "sats": "n"}`, or `"msats"` for msat units; amounts are strings (compatibility)."""

    token: str
    sats: str | None = None
    msats: str | None = None

    @classmethod
    def from_domain(cls, refund: RefundToken) -> "RefundTokenResponse":
        if refund.unit == "sat":
            return cls(token=refund.token, sats=str(refund.amount))
        return cls(token=refund.token, msats=str(refund.amount))
