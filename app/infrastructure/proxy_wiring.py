"""Wiring of the paid proxy: upstream clients, pricing policy, rate, catalog and proxy services, and their jobs.

The jobs are the catalog and rate refresh, the lease heartbeat (lease/3) and the sweeper (lease/2).
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog
from litestar.di import Provide

from app.adapters.catalog import configured_providers, static_offers
from app.adapters.prices import build_price_sources, make_price_client
from app.adapters.providers import AnthropicUpstream, OpenAiUpstream, OpenRouterUpstream, make_upstream_client
from app.api.errors import status_and_type
from app.domain.errors import DomainError
from app.domain.money import Msat
from app.domain.node import VERSION
from app.domain.ports import Clock, Ledger, Upstream
from app.domain.pricing import FeeSchedule, FixedPricing, PricingPolicy
from app.domain.provider_config import ProviderConfig, ProviderType
from app.domain.services.accounts import AccountService
from app.domain.services.models import ModelCatalogService, UpstreamFeed
from app.domain.services.proxy import ProxyService, ProxyTimings, RequestObserver
from app.domain.services.rates import ExchangeRateService
from app.infrastructure.settings import Settings

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

Closers = list[Callable[[], Awaitable[None]]]


def client_status(error: BaseException) -> int:
    """The HTTP status the client gets for an error the proxy raised (the API's mapping, e.g. 400 for a spent Cashu
    token), so `request_completed` logs the real status; 499 when the client went away, 500 otherwise."""
    if isinstance(error, DomainError):
        return status_and_type(error)[0]
    return 499 if isinstance(error, asyncio.CancelledError) else 500


class LogSettlementObserver:
    """`settlement_retry` / `settlement_failed` events: request id, counts and the error class, never a secret."""

    def settlement_retry(self, request_id: str, attempt: int, delay_seconds: float, error_type: str) -> None:
        log.warning(
            "settlement_retry",
            request_id=request_id,
            attempt=attempt,
            delay_seconds=delay_seconds,
            error_type=error_type,
        )

    def settlement_failed(self, request_id: str, attempts: int, charge_msat: int, error_type: str) -> None:
        log.error(
            "settlement_failed",
            request_id=request_id,
            attempts=attempts,
            charge_msat=charge_msat,
            error_type=error_type,
        )


def providers_of(settings: Settings) -> list[ProviderConfig]:
    """PROVIDERS_PATH when set, else the `default` provider from UPSTREAM_*. Raises CatalogFileError."""
    return configured_providers(
        settings.providers_path,
        upstream_base_url=settings.upstream_base_url,
        upstream_api_key=settings.upstream_api_key,
        api_keys=settings.provider_api_keys,
    )


def build_upstreams(settings: Settings, closers: Closers) -> dict[str, Upstream]:
    """One adapter per configured provider, each with its own pooled client (closed at shutdown)."""
    upstreams: dict[str, Upstream] = {}
    user_agent = f"routstr-core/{VERSION}"
    for provider in providers_of(settings):
        client = make_upstream_client(float(settings.upstream_timeout_seconds))
        closers.append(client.aclose)
        if provider.type is ProviderType.OPENROUTER:
            upstreams[provider.id] = OpenRouterUpstream(
                provider_id=provider.id,
                base_url=provider.base_url,
                api_key=provider.api_key,
                client=client,
                user_agent=user_agent,
                referer=settings.http_url,
                title=settings.name,
            )
        elif provider.type is ProviderType.ANTHROPIC:
            upstreams[provider.id] = AnthropicUpstream(
                provider_id=provider.id,
                base_url=provider.base_url,
                api_key=provider.api_key,
                client=client,
                user_agent=user_agent,
                anthropic_version=provider.anthropic_version,
            )
        else:
            upstreams[provider.id] = OpenAiUpstream(
                provider_id=provider.id,
                base_url=provider.base_url,
                api_key=provider.api_key,
                client=client,
                user_agent=user_agent,
            )
    return upstreams


def pricing_policy(settings: Settings) -> PricingPolicy:
    return PricingPolicy(
        fees=FeeSchedule(
            exchange_fee_ppm=settings.exchange_fee_ppm, provider_fee_ppm=settings.upstream_provider_fee_ppm
        ),
        min_request=Msat(settings.min_request_msat),
        tolerance_ppm=settings.tolerance_ppm,
        fixed=FixedPricing(
            per_request_msat=settings.fixed_cost_per_request_msat,
            per_1k_input_msat=settings.fixed_per_1k_input_tokens_msat,
            per_1k_output_msat=settings.fixed_per_1k_output_tokens_msat,
        ),
        fixed_mode=settings.fixed_pricing,
    )


@dataclass(frozen=True)
class ProxyServices:
    """App-wide stateful services: the rate, the model catalog and the proxy (which tracks live reservations)."""

    rates: ExchangeRateService
    catalog: ModelCatalogService
    proxy: ProxyService
    closers: Closers

    def dependencies(self) -> dict[str, Provide]:
        proxy, catalog = self.proxy, self.catalog
        return {
            "proxy": Provide(lambda: proxy, use_cache=True, sync_to_thread=False),
            "models": Provide(lambda: catalog, use_cache=True, sync_to_thread=False),
        }


def build_proxy_services(
    settings: Settings,
    *,
    ledger: Ledger,
    clock: Clock,
    upstreams: Mapping[str, Upstream],
    observer: RequestObserver,
    rates: ExchangeRateService | None = None,
    accounts: AccountService | None = None,
) -> ProxyServices:
    policy = pricing_policy(settings)
    closers: Closers = []
    if rates is None:
        sources = []
        if settings.btc_usd_price_micro is None:
            price_client = make_price_client()
            closers.append(price_client.aclose)
            sources = build_price_sources(settings.price_sources, price_client)
        rates = ExchangeRateService(
            sources,
            clock,
            max_age_seconds=settings.price_max_age_seconds,
            fixed_rate_micro=settings.btc_usd_price_micro,
        )
    providers = [p for p in providers_of(settings) if p.id in upstreams]
    feeds = [] if settings.models_path else [UpstreamFeed(upstreams[p.id], provider=p) for p in providers]
    catalog = ModelCatalogService(
        policy=policy,
        rate=rates.current_or_none,
        feeds=feeds,
        static_offers=static_offers(settings.models_path, providers) if providers else (),
    )
    proxy = ProxyService(
        ledger=ledger,
        clock=clock,
        accounts=accounts if accounts is not None else AccountService(ledger, clock),
        upstreams=upstreams,
        catalog=catalog.current,
        rate=rates.current_or_none,
        policy=policy,
        observer=observer,
        timings=ProxyTimings(
            lease_seconds=settings.reservation_lease_seconds, drain_seconds=float(settings.stream_drain_seconds)
        ),
        messages_providers=frozenset(p.id for p in providers if p.type is ProviderType.ANTHROPIC),
        settlements=LogSettlementObserver(),
        refusal_status=client_status,
    )
    return ProxyServices(rates=rates, catalog=catalog, proxy=proxy, closers=closers)


async def _every(seconds: float, name: str, job: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception as exc:  # a failing job run is logged and retried next period
            log.warning("job_failed", job=name, error_type=type(exc).__name__)


async def _refresh_catalog(services: ProxyServices) -> None:
    outcome = await services.catalog.refresh()
    for provider, reason in outcome.failures.items():
        log.warning("catalog_refresh_failed", provider=provider, reason=reason)


async def _refresh_rate(services: ProxyServices) -> None:
    outcome = await services.rates.refresh()
    if outcome.updated:
        log.info("price_updated", btc_usd_micro=outcome.rate_micro, sources=sorted(outcome.quotes))


async def start_proxy_jobs(settings: Settings, services: ProxyServices) -> list[asyncio.Task[None]]:
    """Load the catalog (and the rate) once, then run every periodic proxy job; returns the tasks to cancel."""
    if not services.rates.is_fixed:
        await _refresh_rate(services)
    await _refresh_catalog(services)
    lease = settings.reservation_lease_seconds
    jobs: list[tuple[float, str, Callable[[], Awaitable[object]]]] = [
        (lease / 3, "lease_heartbeat", services.proxy.renew_leases),
        (lease / 2, "sweeper", services.proxy.sweep),
    ]
    if settings.models_refresh_interval_seconds > 0:
        jobs.append((settings.models_refresh_interval_seconds, "catalog_refresh", lambda: _refresh_catalog(services)))
    if not services.rates.is_fixed:
        jobs.append((settings.pricing_refresh_interval_seconds, "rate_refresh", lambda: _refresh_rate(services)))
    return [asyncio.create_task(_every(period, name, job)) for period, name, job in jobs]


async def stop_proxy_jobs(tasks: list[asyncio.Task[None]], services: ProxyServices, grace_seconds: float) -> None:
    """Cancel the jobs, then give open streams `grace_seconds` to finish and settle."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await services.proxy.shutdown(grace_seconds)
    for close in services.closers:
        await close()
