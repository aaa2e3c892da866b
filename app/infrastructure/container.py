"""Composition root: builds the real adapters from settings and the services the controllers receive."""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from litestar.di import Provide

from app.adapters.nostr import SecpEventSigner, SecpSignatureVerifier, WebsocketRelay
from app.adapters.sql import SqlDatabase, SqlLedger, SqlLedgerAudit, SqlStorageHealth
from app.adapters.system.clock import SystemClock
from app.domain.node import VERSION, NodeInfo
from app.domain.nostr_bech32 import npub_encode
from app.domain.ports import Clock, EventSigner, Ledger, LedgerAudit, Relay, SignatureVerifier, StorageHealth, Upstream
from app.domain.services.accounts import AccountService
from app.domain.services.health import HealthService
from app.infrastructure.proxy_wiring import build_upstreams
from app.infrastructure.settings import Settings


@dataclass(frozen=True)
class Adapters:
    """One field per port. Tests build this with fakes; `build_adapters` with the real thing."""

    clock: Clock
    ledger: Ledger
    audit: LedgerAudit
    storage_health: StorageHealth
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    upstreams: Mapping[str, Upstream] = field(default_factory=dict)
    relays: tuple[Relay, ...] = ()
    nostr_signer: EventSigner | None = None
    signature_verifier: SignatureVerifier = field(default_factory=SecpSignatureVerifier)

    async def close(self) -> None:
        for close in reversed(self.closers):
            await close()


def build_adapters(settings: Settings) -> Adapters:
    """The production adapters. Creates clients and engines but performs no I/O."""
    database = SqlDatabase.create(settings.database_url)
    closers: list[Callable[[], Awaitable[None]]] = [database.dispose]
    return Adapters(
        clock=SystemClock(),
        ledger=SqlLedger(database),
        audit=SqlLedgerAudit(database),
        storage_health=SqlStorageHealth(database),
        closers=closers,
        upstreams=build_upstreams(settings, closers),
        relays=tuple(WebsocketRelay(url) for url in settings.relays),
        nostr_signer=SecpEventSigner(bytes.fromhex(settings.nsec)) if settings.nsec else None,
    )


def node_info(settings: Settings, npub: str | None = None) -> NodeInfo:
    return NodeInfo(
        name=settings.name,
        description=settings.description,
        version=VERSION,
        npub=npub,
        mints=settings.trusted_mints,
        primary_mint=settings.primary_mint_url,
        unit=settings.primary_mint_unit,
        http_url=settings.http_url,
        onion_url=settings.onion_url,
        child_key_cost_msat=settings.child_key_cost_msat,
        pricing_mode="fixed" if settings.fixed_pricing else "model",
        min_request_msat=settings.min_request_msat,
        exchange_fee_ppm=settings.exchange_fee_ppm,
        upstream_provider_fee_ppm=settings.upstream_provider_fee_ppm,
    )


def _npub(adapters: Adapters) -> str | None:
    return npub_encode(adapters.nostr_signer.public_key) if adapters.nostr_signer is not None else None


def _constant(value: object) -> Provide:
    def provide() -> object:
        return value

    return Provide(provide, use_cache=True, sync_to_thread=False)


def dependencies(settings: Settings, adapters: Adapters) -> dict[str, Provide]:
    """Stateless services, built once per app."""
    return {
        "node_info": _constant(node_info(settings, _npub(adapters))),
        "accounts": _constant(AccountService(adapters.ledger, adapters.clock)),
        "health": _constant(HealthService(adapters.storage_health)),
    }
