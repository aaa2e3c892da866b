"""Composition root: builds the real adapters from settings and the services the controllers receive."""

import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx
from litestar.di import Provide

from app.adapters.cashu.codec import CashuTokenCodec
from app.adapters.cashu.mint import HttpCashuMint
from app.adapters.nostr import SecpEventSigner, SecpSignatureVerifier, WebsocketRelay
from app.adapters.sql import SqlDatabase, SqlJobLeases, SqlLedger, SqlLedgerAudit, SqlStorageHealth
from app.adapters.sql.redemptions import SqlRedemptions
from app.adapters.sql.wallet import SqlWallet
from app.adapters.system.clock import SystemClock
from app.domain.errors import NotFoundError
from app.domain.node import VERSION, NodeInfo
from app.domain.nostr_bech32 import npub_encode
from app.domain.ports import (
    Clock,
    EventSigner,
    JobLeases,
    Ledger,
    LedgerAudit,
    Mint,
    Redemptions,
    Relay,
    SignatureVerifier,
    StorageHealth,
    TokenCodec,
    Upstream,
    Wallet,
)
from app.domain.services.accounts import AccountService
from app.domain.services.health import HealthService
from app.domain.services.payments import BalanceService, MintPolicy, RedemptionService
from app.domain.services.refunds import RefundService
from app.infrastructure.proxy_wiring import build_upstreams
from app.infrastructure.settings import Settings


def new_instance_id() -> str:
    """This process's lease holder id: host, pid and a random suffix (unique even when pids repeat in containers)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(6)}"


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
    # Cashu payments; without mint, wallet and redemptions the node accepts no tokens (tests of other parts).
    mint: Mint | None = None
    wallet: Wallet | None = None
    redemptions: Redemptions | None = None
    token_codec: TokenCodec = field(default_factory=CashuTokenCodec)
    # Leased jobs (SPEC §3). None: no shared store, so this process is taken to be the only instance.
    job_leases: JobLeases | None = None
    instance_id: str = field(default_factory=new_instance_id)

    async def close(self) -> None:
        for close in reversed(self.closers):
            await close()


def build_adapters(settings: Settings) -> Adapters:
    """The production adapters. Creates clients and engines but performs no I/O."""
    database = SqlDatabase.create(settings.database_url)
    closers: list[Callable[[], Awaitable[None]]] = [database.dispose]
    mint_client = httpx.AsyncClient(
        timeout=httpx.Timeout(float(settings.mint_operation_timeout_seconds)), follow_redirects=False, trust_env=False
    )
    closers.append(mint_client.aclose)
    return Adapters(
        clock=SystemClock(),
        ledger=SqlLedger(database),
        audit=SqlLedgerAudit(database),
        storage_health=SqlStorageHealth(database),
        closers=closers,
        upstreams=build_upstreams(settings, closers),
        relays=tuple(WebsocketRelay(url) for url in settings.relays),
        nostr_signer=SecpEventSigner(bytes.fromhex(settings.nsec)) if settings.nsec else None,
        mint=HttpCashuMint(
            mint_client,
            timeout_seconds=float(settings.mint_operation_timeout_seconds),
            max_concurrency=settings.mint_max_concurrency,
            retry_max_attempts=settings.mint_retry_max_attempts,
        ),
        wallet=SqlWallet(database),
        redemptions=SqlRedemptions(database),
        job_leases=SqlJobLeases(database),
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


def redemption_service(settings: Settings, adapters: Adapters) -> RedemptionService | None:
    """Token redemption for token-as-key, create and top-up; None when the adapters carry no mint or wallet."""
    if adapters.mint is None or adapters.redemptions is None:
        return None
    return RedemptionService(
        codec=adapters.token_codec,
        mint=adapters.mint,
        redemptions=adapters.redemptions,
        ledger=adapters.ledger,
        clock=adapters.clock,
        policy=MintPolicy(trusted_mints=settings.trusted_mints, unit=settings.primary_mint_unit),
        timeout_seconds=float(settings.mint_operation_timeout_seconds),
    )


def account_service(settings: Settings, adapters: Adapters) -> AccountService:
    """Who is calling: `Bearer sk-…` keys, and `Bearer cashu…` tokens when payments are wired."""
    return AccountService(adapters.ledger, adapters.clock, redemption_service(settings, adapters))


def _payments_unavailable() -> Provide:
    def provide() -> object:
        msg = "Cashu payments are not available on this node"
        raise NotFoundError(msg)

    return Provide(provide, sync_to_thread=False)


def _payment_dependencies(settings: Settings, adapters: Adapters) -> dict[str, Provide]:
    redemption = redemption_service(settings, adapters)
    if redemption is None or adapters.mint is None or adapters.wallet is None:
        return {name: _payments_unavailable() for name in ("balances", "refunds")}
    refunds = RefundService(
        wallet=adapters.wallet, mint=adapters.mint, codec=adapters.token_codec, clock=adapters.clock
    )
    return {
        "balances": _constant(BalanceService(redemption, adapters.ledger)),
        "refunds": _constant(refunds),
    }


def dependencies(settings: Settings, adapters: Adapters) -> dict[str, Provide]:
    """Stateless services, built once per app."""
    return {
        "node_info": _constant(node_info(settings, _npub(adapters))),
        "accounts": _constant(account_service(settings, adapters)),
        "health": _constant(HealthService(adapters.storage_health)),
        **_payment_dependencies(settings, adapters),
    }
