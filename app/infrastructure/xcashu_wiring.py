"""Wiring of the paid-request front (SPEC §6): X-Cashu pay-per-request with change, NUT-24 402s, X-Cashu refunds."""

from litestar.di import Provide

from app.domain.services.proxy import ProxyService
from app.domain.services.refunds import RefundService
from app.domain.services.xcashu import PaymentModeObserver, XCashuPayments, XCashuService
from app.infrastructure.container import Adapters, redemption_service
from app.infrastructure.settings import Settings


def build_x_cashu(
    settings: Settings, adapters: Adapters, proxy: ProxyService, modes: PaymentModeObserver | None = None
) -> XCashuService:
    """The front of every paid route. Without mint, wallet and redemptions, X-Cashu tokens are refused (400) but
    402s still carry a creq."""
    redemption = redemption_service(settings, adapters)
    payments = None
    mint, wallet, redemptions = adapters.mint, adapters.wallet, adapters.redemptions
    if redemption is not None and mint is not None and wallet is not None and redemptions is not None:
        refunds = RefundService(wallet=wallet, mint=mint, codec=adapters.token_codec, clock=adapters.clock)
        payments = XCashuPayments(
            redemption=redemption,
            refunds=refunds,
            mint=mint,
            ledger=adapters.ledger,
            wallet=wallet,
            redemptions=redemptions,
        )
    return XCashuService(
        proxy=proxy,
        codec=adapters.token_codec,
        clock=adapters.clock,
        mints=settings.trusted_mints,
        unit=settings.primary_mint_unit,
        payments=payments,
        modes=modes,
    )


def x_cashu_dependencies(service: XCashuService) -> dict[str, Provide]:
    return {"paid": Provide(lambda: service, use_cache=True, sync_to_thread=False)}
