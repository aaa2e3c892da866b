"""What the node says about itself: name, mints, pricing mode and fees (GET / and /v1/info)."""

from dataclasses import dataclass

VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    description: str
    version: str
    npub: str | None
    mints: tuple[str, ...]
    primary_mint: str
    unit: str
    http_url: str | None
    onion_url: str | None
    child_key_cost_msat: int
    pricing_mode: str
    min_request_msat: int
    exchange_fee_ppm: int
    upstream_provider_fee_ppm: int


@dataclass(frozen=True, slots=True)
class HealthReport:
    """`checks` maps a check name to "ok" or what failed; healthy only when every check is ok."""

    checks: dict[str, str]

    @property
    def healthy(self) -> bool:
        return all(v == "ok" for v in self.checks.values())
